-- spock node and replication-set management (Spock 5.0.5 names, arguments, defaults and return
-- types). Management functions are superuser-only: EXECUTE is revoked from PUBLIC at the end.

-- Ids and names computed as upstream (hooks/src/naming.rs).
CREATE FUNCTION spock.spock_node_id(node_name text) RETURNS oid
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_node_id_wrapper';
CREATE FUNCTION spock.spock_member_id(node_id oid, member_name text) RETURNS oid
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_member_id_wrapper';
CREATE FUNCTION spock.spock_sub_id(subscription_name text) RETURNS oid
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_sub_id_wrapper';
CREATE FUNCTION spock.spock_slot_name(dbname text, provider_node text, subscription_name text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_slot_name_wrapper';
CREATE FUNCTION spock.spock_gen_slot_name(name, name, name) RETURNS name
    LANGUAGE sql IMMUTABLE STRICT AS 'SELECT spock.spock_slot_name($1, $2, $3)::name';

-- Raises an ERROR (SQLSTATE, message, detail, hint) for the API's functions without the
-- CONTEXT lines PL/pgSQL would add about spock's own functions: users see what upstream's C
-- functions show them.
CREATE FUNCTION spock.spock_error(sqlstate text, message text, detail text DEFAULT NULL, hint text DEFAULT NULL)
RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'spock_error_wrapper';
REVOKE EXECUTE ON FUNCTION spock.spock_error(text, text, text, text) FROM PUBLIC;

-- The local node's id; ERROR when this database is not a spock node.
CREATE FUNCTION spock.local_node_id() RETURNS oid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE v_id oid;
BEGIN
    SELECT node_id INTO v_id FROM spock.local_node;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('55000', 'local spock node not found');
    END IF;
    RETURN v_id;
END $$;

-- Whether updates and deletes of the table can be replicated (it has a replica-identity index).
CREATE FUNCTION spock.has_replica_identity_index(p_rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         WHERE i.indrelid = p_rel
           AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
$$;

-- The replica-identity index's columns, in index order (the key of a row's tombstone).
CREATE FUNCTION spock.replica_identity_columns(p_rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT array_agg(a.attname::text ORDER BY k.n)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = p_rel
       AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))
$$;

-- Which of two local writes is the later one, for the apply worker's statements (see
-- apply/versions.rs).
CREATE FUNCTION spock.apply_local_newer(a xid, b xid) RETURNS boolean
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'apply_local_newer_wrapper';

-- Records a local DELETE as a tombstone: the deleting transaction (the tombstone's xmin) gives
-- the delete's commit timestamp, so a late remote INSERT or UPDATE of the same key that is
-- older than the delete does not bring the row back. The apply worker writes the tombstones of
-- remote deletes itself (this trigger does not fire for replicated changes).
CREATE FUNCTION spock.tombstone_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    v_key text;
BEGIN
    SELECT string_agg(format('($2).%I', k), ', ')
      INTO v_key FROM unnest(spock.replica_identity_columns(TG_RELID)) AS k;
    IF v_key IS NOT NULL THEN
        EXECUTE 'INSERT INTO spock.tombstones (relid, key) VALUES ($1, record_send(ROW(' || v_key
             || '))) ON CONFLICT (relid, key) DO UPDATE SET relid = EXCLUDED.relid'
          USING TG_RELID, OLD;
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION spock.tombstone_trigger() FROM PUBLIC;
-- The apply worker's statements on a table run as the table's owner and call this; it only
-- compares commit timestamps.
GRANT EXECUTE ON FUNCTION spock.apply_local_newer(xid, xid) TO PUBLIC;

-- Adds the tombstone trigger to a replicated table (not to partitioned parents: their
-- partitions are members of their own).
CREATE FUNCTION spock.track_deletes(p_rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog SET spock.enable_ddl_replication = off AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'r'
       AND spock.has_replica_identity_index(p_rel)
       AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = p_rel AND tgname = 'spock_tombstone') THEN
        EXECUTE format('CREATE TRIGGER spock_tombstone AFTER DELETE ON %s FOR EACH ROW '
                       'EXECUTE FUNCTION spock.tombstone_trigger()', p_rel);
    END IF;
END $$;

-- Removes it once the table is in no replication set any more.
CREATE FUNCTION spock.untrack_deletes(p_rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog SET spock.enable_ddl_replication = off AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spock.replication_set_table WHERE set_reloid = p_rel)
       AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = p_rel AND tgname = 'spock_tombstone') THEN
        EXECUTE format('DROP TRIGGER spock_tombstone ON %s', p_rel);
        DELETE FROM spock.tombstones WHERE relid = p_rel;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION spock.track_deletes(regclass), spock.untrack_deletes(regclass) FROM PUBLIC;

CREATE FUNCTION spock.node_create(node_name name, dsn text, location text DEFAULT NULL,
                                  country text DEFAULT NULL, info jsonb DEFAULT NULL)
RETURNS oid LANGUAGE plpgsql CALLED ON NULL INPUT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_node oid;
    v_if oid;
BEGIN
    IF node_create.node_name IS NULL OR node_create.dsn IS NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM spock.node WHERE node_name = node_create.node_name) THEN
        PERFORM spock.spock_error('42710', format('node "%s" already exists', node_create.node_name));
    END IF;
    IF EXISTS (SELECT 1 FROM spock.local_node) THEN
        PERFORM spock.spock_error('42710', 'current database is already configured as a spock node',
            NULL, 'Drop the local node with spock.node_drop() first.');
    END IF;
    IF node_create.dsn = '' THEN
        PERFORM spock.spock_error('22023', format('dsn of node "%s" cannot be empty', node_create.node_name));
    END IF;
    v_node := spock.spock_node_id(node_create.node_name);
    IF EXISTS (SELECT 1 FROM spock.node WHERE node_id = v_node) THEN
        PERFORM spock.spock_error('42710', format('node id %s of "%s" is already used by node "%s"', v_node, node_create.node_name, (SELECT node_name FROM spock.node WHERE node_id = v_node)),
            NULL, 'Choose another node name.');
    END IF;
    INSERT INTO spock.node (node_id, node_name, location, country, info)
        VALUES (v_node, node_create.node_name, node_create.location, node_create.country, node_create.info);
    v_if := spock.spock_member_id(v_node, node_create.node_name);
    INSERT INTO spock.node_interface (if_id, if_name, if_nodeid, if_dsn)
        VALUES (v_if, node_create.node_name, v_node, node_create.dsn);
    INSERT INTO spock.local_node (node_id, node_local_interface) VALUES (v_node, v_if);
    INSERT INTO spock.replication_set
        (set_id, set_nodeid, set_name, replicate_insert, replicate_update, replicate_delete, replicate_truncate)
    VALUES (spock.spock_member_id(v_node, 'default'), v_node, 'default', true, true, true, true),
           (spock.spock_member_id(v_node, 'default_insert_only'), v_node, 'default_insert_only', true, false, false, true),
           (spock.spock_member_id(v_node, 'ddl_sql'), v_node, 'ddl_sql', true, false, false, false);
    RETURN v_node;
END $$;

CREATE FUNCTION spock.node_drop(node_name name, ifexists boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_node oid;
    v_slot record;
BEGIN
    SELECT node_id INTO v_node FROM spock.node WHERE node_name = node_drop.node_name;
    IF NOT FOUND THEN
        IF node_drop.ifexists THEN
            RETURN false;
        END IF;
        PERFORM spock.spock_error('42704', format('node "%s" not found', node_drop.node_name));
    END IF;
    IF EXISTS (SELECT 1 FROM spock.subscription WHERE sub_origin = v_node OR sub_target = v_node) THEN
        PERFORM spock.spock_error('55000', format('cannot drop node "%s" because it still has subscriptions associated with it', node_drop.node_name),
            NULL, 'drop the subscriptions first');
    END IF;
    IF EXISTS (SELECT 1 FROM spock.local_node WHERE node_id = v_node) THEN
        FOR v_slot IN
            SELECT slot_name, active FROM pg_replication_slots
             WHERE database = current_database() AND plugin IN ('spock_output', 'spock')
               AND slot_name ~ '^spk_'
        LOOP
            IF v_slot.active THEN
                PERFORM spock.spock_error('55000', format('cannot drop node "%s" because one or more replication slots for the node are still active', node_drop.node_name),
                    NULL, 'drop the subscriptions connected to the node first');
            END IF;
            PERFORM pg_drop_replication_slot(v_slot.slot_name);
        END LOOP;
        DELETE FROM spock.local_node WHERE node_id = v_node;
    END IF;
    DELETE FROM spock.replication_set_table
     WHERE set_id IN (SELECT set_id FROM spock.replication_set WHERE set_nodeid = v_node);
    DELETE FROM spock.replication_set_seq
     WHERE set_id IN (SELECT set_id FROM spock.replication_set WHERE set_nodeid = v_node);
    DELETE FROM spock.replication_set WHERE set_nodeid = v_node;
    DELETE FROM spock.node_interface WHERE if_nodeid = v_node;
    DELETE FROM spock.node WHERE node_id = v_node;
    RETURN true;
END $$;

CREATE FUNCTION spock.node_add_interface(node_name name, interface_name name, dsn text)
RETURNS oid LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_node oid;
    v_if oid;
BEGIN
    SELECT node_id INTO v_node FROM spock.node WHERE node_name = node_add_interface.node_name;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('node "%s" not found', node_add_interface.node_name));
    END IF;
    IF EXISTS (SELECT 1 FROM spock.node_interface
                WHERE if_nodeid = v_node AND if_name = node_add_interface.interface_name) THEN
        PERFORM spock.spock_error('22023', format('node "%s" already has interface named "%s"', node_add_interface.node_name, node_add_interface.interface_name));
    END IF;
    v_if := spock.spock_member_id(v_node, node_add_interface.interface_name);
    INSERT INTO spock.node_interface (if_id, if_name, if_nodeid, if_dsn)
        VALUES (v_if, node_add_interface.interface_name, v_node, node_add_interface.dsn);
    RETURN v_if;
END $$;

CREATE FUNCTION spock.node_drop_interface(node_name name, interface_name name)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_if oid;
    v_sub name;
BEGIN
    SELECT i.if_id INTO v_if FROM spock.node_interface i JOIN spock.node n ON n.node_id = i.if_nodeid
     WHERE n.node_name = node_drop_interface.node_name AND i.if_name = node_drop_interface.interface_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT sub_name INTO v_sub FROM spock.subscription WHERE sub_origin_if = v_if LIMIT 1;
    IF FOUND THEN
        PERFORM spock.spock_error('55000', format('cannot drop interface "%s" for node "%s" because subscription "%s" is using it', node_drop_interface.interface_name, node_drop_interface.node_name, v_sub),
            NULL, 'change the subscription interface first');
    END IF;
    IF EXISTS (SELECT 1 FROM spock.local_node WHERE node_local_interface = v_if) THEN
        PERFORM spock.spock_error('2BP01', format('cannot drop interface "%s" because it is the local node''s own interface', node_drop_interface.interface_name));
    END IF;
    DELETE FROM spock.node_interface WHERE if_id = v_if;
    RETURN true;
END $$;

CREATE FUNCTION spock.node_info(OUT node_id oid, OUT node_name text, OUT sysid text, OUT dbname text,
                                OUT replication_sets text, OUT location text, OUT country text,
                                OUT info jsonb)
RETURNS record LANGUAGE sql STABLE STRICT SET search_path = pg_catalog AS $$
    SELECT n.node_id, n.node_name::text, (SELECT system_identifier::text FROM pg_control_system()),
           current_database()::text,
           (SELECT string_agg(quote_ident(s.set_name), ',' ORDER BY s.set_name)
              FROM spock.replication_set s WHERE s.set_nodeid = n.node_id),
           n.location, n.country, n.info
      FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id
$$;
-- It describes the node (system identifier, database, sets). Upstream 5.0.5 grants PUBLIC no
-- USAGE on schema spock, so there only superusers reach it; here the schema is usable by
-- PUBLIC, so EXECUTE is taken away instead. sub_create calls it on the provider as the DSN's
-- user, who must therefore be a superuser, as upstream.
REVOKE EXECUTE ON FUNCTION spock.node_info() FROM PUBLIC;

CREATE FUNCTION spock.repset_create(set_name name, replicate_insert boolean = true,
                                    replicate_update boolean = true, replicate_delete boolean = true,
                                    replicate_truncate boolean = true)
RETURNS oid LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_node oid := spock.local_node_id();
    v_set oid;
BEGIN
    IF repset_create.set_name = '' THEN
        PERFORM spock.spock_error('22023', 'replication set name cannot be empty');
    END IF;
    IF EXISTS (SELECT 1 FROM spock.replication_set WHERE set_nodeid = v_node AND set_name = repset_create.set_name) THEN
        PERFORM spock.spock_error('42710', format('replication set "%s" already exists', repset_create.set_name));
    END IF;
    v_set := spock.spock_member_id(v_node, repset_create.set_name);
    INSERT INTO spock.replication_set
        (set_id, set_nodeid, set_name, replicate_insert, replicate_update, replicate_delete, replicate_truncate)
    VALUES (v_set, v_node, repset_create.set_name, repset_create.replicate_insert, repset_create.replicate_update,
            repset_create.replicate_delete, repset_create.replicate_truncate);
    RETURN v_set;
END $$;

-- The set of the local node called p_name; ERROR if there is none.
CREATE FUNCTION spock.local_repset(p_name name) RETURNS spock.replication_set
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE v_set spock.replication_set;
BEGIN
    IF p_name IS NULL THEN
        PERFORM spock.spock_error('22004', 'set_name cannot be NULL');
    END IF;
    SELECT s.* INTO v_set FROM spock.replication_set s
     WHERE s.set_nodeid = spock.local_node_id() AND s.set_name = p_name;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('replication set %s not found', p_name));
    END IF;
    RETURN v_set;
END $$;

CREATE FUNCTION spock.repset_alter(set_name name, replicate_insert boolean DEFAULT NULL,
                                   replicate_update boolean DEFAULT NULL,
                                   replicate_delete boolean DEFAULT NULL,
                                   replicate_truncate boolean DEFAULT NULL)
RETURNS oid LANGUAGE plpgsql CALLED ON NULL INPUT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_alter.set_name);
    v_bad regclass;
BEGIN
    IF coalesce(repset_alter.replicate_update, false) OR coalesce(repset_alter.replicate_delete, false) THEN
        SELECT set_reloid INTO v_bad FROM spock.replication_set_table
         WHERE set_id = v_set.set_id AND NOT spock.has_replica_identity_index(set_reloid) LIMIT 1;
        IF FOUND THEN
            PERFORM spock.spock_error('22023', format('replication set "%s" cannot be altered to replicate UPDATEs or DELETEs because it contains tables without PRIMARY KEY', repset_alter.set_name),
                format('Table %s has no replica identity index.', v_bad), NULL);
        END IF;
    END IF;
    UPDATE spock.replication_set
       SET replicate_insert = coalesce(repset_alter.replicate_insert, replicate_insert),
           replicate_update = coalesce(repset_alter.replicate_update, replicate_update),
           replicate_delete = coalesce(repset_alter.replicate_delete, replicate_delete),
           replicate_truncate = coalesce(repset_alter.replicate_truncate, replicate_truncate)
     WHERE set_id = v_set.set_id;
    RETURN v_set.set_id;
END $$;

CREATE FUNCTION spock.repset_drop(set_name name, ifexists boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set oid;
BEGIN
    SELECT set_id INTO v_set FROM spock.replication_set
     WHERE set_nodeid = spock.local_node_id() AND set_name = repset_drop.set_name;
    IF NOT FOUND THEN
        IF repset_drop.ifexists THEN
            RETURN false;
        END IF;
        PERFORM spock.spock_error('42704', format('replication set %s not found', repset_drop.set_name));
    END IF;
    DELETE FROM spock.replication_set_table WHERE set_id = v_set;
    DELETE FROM spock.replication_set_seq WHERE set_id = v_set;
    DELETE FROM spock.replication_set WHERE set_id = v_set;
    RETURN true;
END $$;

-- Parses a row filter with the names of `search_path` (the caller's, as upstream) into a
-- node tree, which names everything by oid: it evaluates the same under any search_path.
CREATE FUNCTION spock.spock_parse_row_filter(relation regclass, row_filter text, search_path text)
RETURNS pg_node_tree LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_parse_row_filter_wrapper';
REVOKE EXECUTE ON FUNCTION spock.spock_parse_row_filter(regclass, text, text) FROM PUBLIC;

-- repset_add_table itself only hands the caller's search_path (for the row filter's names)
-- to its body, which runs with search_path = pg_catalog. Every name here is qualified.
CREATE FUNCTION spock.repset_add_table_in_path(set_name name, relation regclass, synchronize_data boolean,
                                               columns text[], row_filter text, include_partitions boolean,
                                               caller_search_path text)
RETURNS boolean LANGUAGE plpgsql CALLED ON NULL INPUT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_add_table_in_path.set_name);
    v_rel regclass;
    v_col text;
    v_members regclass[];
BEGIN
    IF repset_add_table_in_path.relation IS NULL THEN
        PERFORM spock.spock_error('22004', 'relation cannot be NULL');
    END IF;
    IF repset_add_table_in_path.synchronize_data IS NULL THEN
        PERFORM spock.spock_error('22004', 'synchronize_data cannot be NULL');
    END IF;
    IF repset_add_table_in_path.columns IS NOT NULL THEN
        FOREACH v_col IN ARRAY repset_add_table_in_path.columns LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = repset_add_table_in_path.relation
                              AND attname = v_col AND attnum > 0 AND NOT attisdropped) THEN
                PERFORM spock.spock_error('42703', format('table %s does not have column %s', (SELECT relname FROM pg_class WHERE oid = repset_add_table_in_path.relation), v_col));
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                    WHERE i.indrelid = repset_add_table_in_path.relation
                      AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))
                      AND NOT a.attname = ANY (repset_add_table_in_path.columns)) THEN
            PERFORM spock.spock_error('22023', 'REPLICA IDENTITY columns must be replicated');
        END IF;
    END IF;

    v_members := ARRAY[repset_add_table_in_path.relation];
    IF repset_add_table_in_path.include_partitions
       AND (SELECT relkind FROM pg_class WHERE oid = repset_add_table_in_path.relation) = 'p' THEN
        v_members := v_members || ARRAY(SELECT relid FROM pg_partition_tree(repset_add_table_in_path.relation)
                                         WHERE relid <> repset_add_table_in_path.relation ORDER BY level, relid::text);
    END IF;
    FOREACH v_rel IN ARRAY v_members LOOP
        IF (SELECT relpersistence FROM pg_class WHERE oid = v_rel) <> 'p' THEN
            PERFORM spock.spock_error('0A000', 'UNLOGGED and TEMP tables cannot be replicated');
        END IF;
        IF (v_set.replicate_update OR v_set.replicate_delete) AND NOT spock.has_replica_identity_index(v_rel) THEN
            PERFORM spock.spock_error('22023', format('table %s cannot be added to replication set %s', (SELECT relname FROM pg_class WHERE oid = v_rel), v_set.set_name),
                'table does not have PRIMARY KEY and given replication set is configured to replicate UPDATEs and/or DELETEs', 'Add a PRIMARY KEY to the table');
        END IF;
        -- The filter is parsed against each member: a partition's columns may be numbered
        -- differently from its parent's.
        INSERT INTO spock.replication_set_table (set_id, set_reloid, set_att_list, set_row_filter)
            VALUES (v_set.set_id, v_rel, repset_add_table_in_path.columns,
                    CASE WHEN repset_add_table_in_path.row_filter IS NOT NULL
                         THEN spock.spock_parse_row_filter(v_rel, repset_add_table_in_path.row_filter,
                                                      repset_add_table_in_path.caller_search_path) END);
        IF v_set.replicate_delete THEN
            PERFORM spock.track_deletes(v_rel);
        END IF;
    END LOOP;

    IF repset_add_table_in_path.synchronize_data THEN
        INSERT INTO spock.queue (queued_at, role, replication_sets, message_type, message)
        SELECT now(), current_user, ARRAY[v_set.set_name::text], 'A',
               json_build_object('schema_name', n.nspname, 'table_name', c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = repset_add_table_in_path.relation;
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION spock.repset_add_table(set_name name, relation regclass, synchronize_data boolean DEFAULT false,
                                       columns text[] DEFAULT NULL, row_filter text DEFAULT NULL,
                                       include_partitions boolean DEFAULT true)
RETURNS boolean LANGUAGE sql CALLED ON NULL INPUT AS $$
    SELECT spock.repset_add_table_in_path($1, $2, $3, $4, $5, $6, pg_catalog.current_setting('search_path'))
$$;

CREATE FUNCTION spock.repset_add_all_tables(set_name name, schema_names text[], synchronize_data boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_add_all_tables.set_name);
    v_rel record;
BEGIN
    FOR v_rel IN
        SELECT c.oid::regclass AS rel, c.relispartition
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY (repset_add_all_tables.schema_names)
           AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
           AND NOT EXISTS (SELECT 1 FROM spock.replication_set_table t
                            WHERE t.set_id = v_set.set_id AND t.set_reloid = c.oid)
         ORDER BY n.nspname, c.relname
    LOOP
        PERFORM spock.repset_add_table(repset_add_all_tables.set_name, v_rel.rel,
                                       repset_add_all_tables.synchronize_data AND NOT v_rel.relispartition,
                                       NULL, NULL, false);
    END LOOP;
    RETURN true;
END $$;

CREATE FUNCTION spock.repset_remove_table(set_name name, relation regclass, include_partitions boolean DEFAULT true)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_remove_table.set_name);
BEGIN
    DELETE FROM spock.replication_set_table
     WHERE set_id = v_set.set_id AND set_reloid = repset_remove_table.relation;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('Table %s not found in replication set %s', (SELECT relname FROM pg_class WHERE oid = repset_remove_table.relation), v_set.set_name));
    END IF;
    IF repset_remove_table.include_partitions THEN
        DELETE FROM spock.replication_set_table
         WHERE set_id = v_set.set_id
           AND set_reloid IN (SELECT relid FROM pg_partition_tree(repset_remove_table.relation)
                               WHERE relid <> repset_remove_table.relation);
        PERFORM spock.untrack_deletes(relid) FROM pg_partition_tree(repset_remove_table.relation);
    ELSE
        PERFORM spock.untrack_deletes(repset_remove_table.relation);
    END IF;
    RETURN true;
END $$;

-- Management is for superusers only.
REVOKE EXECUTE ON FUNCTION
    spock.node_create(name, text, text, text, jsonb),
    spock.node_drop(name, boolean),
    spock.node_add_interface(name, name, text),
    spock.node_drop_interface(name, name),
    spock.repset_create(name, boolean, boolean, boolean, boolean),
    spock.repset_alter(name, boolean, boolean, boolean, boolean),
    spock.repset_drop(name, boolean),
    spock.repset_add_table(name, regclass, boolean, text[], text, boolean),
    spock.repset_add_table_in_path(name, regclass, boolean, text[], text, boolean, text),
    spock.repset_add_all_tables(name, text[], boolean),
    spock.repset_remove_table(name, regclass, boolean)
FROM PUBLIC;

-- Subscriptions (catalog side; the apply workers that act on them come separately).

CREATE FUNCTION spock.spock_remote_node_info(dsn text, appname text) RETURNS text[]
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_remote_node_info_wrapper';
CREATE FUNCTION spock.spock_check_connection(dsn text, appname text) RETURNS void
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_check_connection_wrapper';
CREATE FUNCTION spock.spock_drop_remote_slot(dsn text, slot text, appname text) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_drop_remote_slot_wrapper';
CREATE FUNCTION spock.spock_remote_slot_exists(dsn text, slot text, appname text) RETURNS boolean
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_remote_slot_exists_wrapper';
-- The DSN with its passwords replaced by ********, for whatever shows a DSN to a user.
CREATE FUNCTION spock.spock_mask_dsn(dsn text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_mask_dsn_wrapper';

-- Wakes this database's spock manager when the calling transaction commits, so it starts or
-- stops apply workers at once rather than at its next one-second look.
CREATE FUNCTION spock.subscriptions_changed() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'spock_subscriptions_changed_wrapper';
REVOKE EXECUTE ON FUNCTION spock.subscriptions_changed() FROM PUBLIC;

CREATE FUNCTION spock.sub_create(subscription_name name, provider_dsn text,
    replication_sets text[] = '{default,default_insert_only,ddl_sql}',
    synchronize_structure boolean = false, synchronize_data boolean = false,
    forward_origins text[] = '{}', apply_delay interval DEFAULT '0',
    force_text_transfer boolean = false, enabled boolean = true, skip_schema text[] = '{}')
RETURNS oid LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_local oid := spock.local_node_id();
    v_local_if oid;
    v_local_dsn text;
    v_info text[];
    v_origin oid;
    v_origin_name name;
    v_origin_if oid;
    v_known_dsn text;
    v_sub oid;
    v_slot name;
    v_kind "char";
    v_overlap name;
    v_overlap_set text;
BEGIN
    IF sub_create.subscription_name !~ '^[a-z0-9_]{1,63}$' THEN
        PERFORM spock.spock_error('42602', format('subscription name "%s" is invalid', sub_create.subscription_name),
            'A subscription name has 1 to 63 characters, each a lower-case letter, digit or underscore.', NULL);
    END IF;
    IF EXISTS (SELECT 1 FROM spock.subscription WHERE sub_name = sub_create.subscription_name) THEN
        PERFORM spock.spock_error('42710', format('subscription "%s" already exists', sub_create.subscription_name));
    END IF;
    IF (sub_create.synchronize_data OR sub_create.synchronize_structure) AND NOT sub_create.enabled THEN
        PERFORM spock.spock_error('22023', format('subscription "%s" in disabled state is not allowed to synchronize structure or data', sub_create.subscription_name));
    END IF;
    IF sub_create.forward_origins NOT IN ('{}', '{all}') THEN
        PERFORM spock.spock_error('22023', 'forward_origins may only be empty or {all}');
    END IF;

    v_info := spock.spock_remote_node_info(sub_create.provider_dsn, sub_create.subscription_name || '_create');
    v_origin := v_info[1]::oid;
    v_origin_name := v_info[2];
    IF v_origin = v_local THEN
        PERFORM spock.spock_error('22023', 'cannot subscribe to the local node itself');
    END IF;
    SELECT l.node_local_interface, i.if_dsn INTO v_local_if, v_local_dsn
      FROM spock.local_node l JOIN spock.node_interface i ON i.if_id = l.node_local_interface;
    PERFORM spock.spock_check_connection(v_local_dsn, sub_create.subscription_name || '_create');

    SELECT i.if_id, i.if_dsn INTO v_origin_if, v_known_dsn
      FROM spock.node_interface i WHERE i.if_nodeid = v_origin AND i.if_name = v_origin_name;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM spock.node WHERE node_id = v_origin) THEN
            INSERT INTO spock.node (node_id, node_name, location, country, info)
                VALUES (v_origin, v_origin_name, v_info[6], v_info[7], v_info[8]::jsonb);
        END IF;
        v_origin_if := spock.spock_member_id(v_origin, v_origin_name);
        INSERT INTO spock.node_interface (if_id, if_name, if_nodeid, if_dsn)
            VALUES (v_origin_if, v_origin_name, v_origin, sub_create.provider_dsn);
    ELSIF v_known_dsn <> sub_create.provider_dsn THEN
        -- Upstream's message, without the passwords (errors reach the log and clients).
        PERFORM spock.spock_error('22023', format('dsn "%s" points to existing node "%s" with different dsn "%s"', spock.spock_mask_dsn(sub_create.provider_dsn), v_origin_name, spock.spock_mask_dsn(v_known_dsn)));
    END IF;

    FOR v_overlap, v_overlap_set IN
        SELECT s.sub_name, x.set_name FROM spock.subscription s
         CROSS JOIN LATERAL unnest(s.sub_replication_sets) AS x(set_name)
         WHERE s.sub_origin = v_origin AND x.set_name = ANY (sub_create.replication_sets)
         ORDER BY s.sub_name, x.set_name
    LOOP
        RAISE WARNING 'existing subscription "%" to node "%" already subscribes to replication set "%"',
            v_overlap, v_origin_name, v_overlap_set;
    END LOOP;

    v_sub := spock.spock_sub_id(sub_create.subscription_name);
    v_slot := spock.spock_gen_slot_name(current_database(), v_origin_name, sub_create.subscription_name);
    -- Slot names are made of the database, provider and subscription names (as upstream's), so
    -- two subscribers can come to the same one: the second would take over the first one's
    -- slot, and each would lose what the other confirmed.
    IF spock.spock_remote_slot_exists(sub_create.provider_dsn, v_slot, sub_create.subscription_name || '_create') THEN
        PERFORM spock.spock_error('42710', format('replication slot "%s" already exists on node "%s"', v_slot, v_origin_name),
            'Another subscriber uses a subscription of the same name on a database of the same name, or a dropped subscription left its slot behind.', 'Choose another subscription name, or drop the slot on the provider if nothing uses it.');
    END IF;
    INSERT INTO spock.subscription (sub_id, sub_name, sub_origin, sub_target, sub_origin_if, sub_target_if,
        sub_enabled, sub_slot_name, sub_replication_sets, sub_forward_origins, sub_apply_delay,
        sub_force_text_transfer, sub_skip_schema)
    VALUES (v_sub, sub_create.subscription_name, v_origin, v_local, v_origin_if, v_local_if,
        sub_create.enabled, v_slot, nullif(sub_create.replication_sets, '{}'),
        nullif(sub_create.forward_origins, '{}'), sub_create.apply_delay,
        sub_create.force_text_transfer, nullif(sub_create.skip_schema, '{}')::text);
    -- Nothing applied yet: no tombstone may be collected on this subscription's account
    -- until its first transaction (or the provider's heartbeat) arrives.
    INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, remote_insert_lsn,
                                last_updated_ts, updated_by_decode)
    VALUES (v_local, v_origin, '-infinity', '0/0', '0/0', now(), false)
    ON CONFLICT (node_id, remote_node_id) DO NOTHING;
    INSERT INTO spock.subscription_progress (sub_id, commit_ts) VALUES (v_sub, '-infinity');
    v_kind := CASE WHEN sub_create.synchronize_structure AND sub_create.synchronize_data THEN 'f'
                   WHEN sub_create.synchronize_structure THEN 's'
                   WHEN sub_create.synchronize_data THEN 'd' ELSE 'i' END;
    INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, sync_status, sync_statuslsn)
    VALUES (v_kind, v_sub, NULL, NULL, CASE WHEN sub_create.enabled THEN 'i' ELSE 'r' END, '0/0');
    IF NOT sub_create.enabled THEN
        PERFORM pg_replication_origin_create(v_slot);
    END IF;
    PERFORM spock.subscriptions_changed();
    RETURN v_sub;
END $$;

-- The subscription called p_name; ERROR if there is none.
CREATE FUNCTION spock.subscription_named(p_name name) RETURNS spock.subscription
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE v_sub spock.subscription;
BEGIN
    SELECT s.* INTO v_sub FROM spock.subscription s WHERE s.sub_name = p_name;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('subscription "%s" not found', p_name));
    END IF;
    RETURN v_sub;
END $$;

-- Declared oid, answering 1 or 0 (as upstream's implementation does).
CREATE FUNCTION spock.sub_drop(subscription_name name, ifexists boolean DEFAULT false)
RETURNS oid LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription;
    v_dsn text;
BEGIN
    SELECT s.* INTO v_sub FROM spock.subscription s WHERE s.sub_name = sub_drop.subscription_name;
    IF NOT FOUND THEN
        IF sub_drop.ifexists THEN
            RETURN 0;
        END IF;
        PERFORM spock.spock_error('42704', format('subscription "%s" not found', sub_drop.subscription_name));
    END IF;
    -- Keep a restarted apply worker waiting until we commit (it takes this lock shared before
    -- reading its subscription), then stop the running one and wait for it to exit, so the
    -- slot and the origin are free to drop.
    PERFORM pg_advisory_xact_lock(v_sub.sub_id::bigint + (1::bigint << 40));
    PERFORM pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity a
      WHERE a.backend_type IN ('spock apply', 'spock sync') AND a.datname = current_database()
        AND a.application_name = v_sub.sub_slot_name;
    DELETE FROM spock.local_sync_status WHERE sync_subid = v_sub.sub_id;
    DELETE FROM spock.subscription WHERE sub_id = v_sub.sub_id;
    PERFORM spock.subscriptions_changed();
    IF EXISTS (SELECT 1 FROM spock.local_node WHERE node_id = v_sub.sub_origin) THEN
        RETURN 1;
    END IF;
    SELECT if_dsn INTO v_dsn FROM spock.node_interface WHERE if_id = v_sub.sub_origin_if;
    IF NOT EXISTS (SELECT 1 FROM spock.subscription WHERE sub_origin = v_sub.sub_origin) THEN
        DELETE FROM spock.progress WHERE remote_node_id = v_sub.sub_origin;
        DELETE FROM spock.node_interface WHERE if_nodeid = v_sub.sub_origin;
        DELETE FROM spock.node WHERE node_id = v_sub.sub_origin;
    END IF;
    BEGIN
        PERFORM spock.spock_drop_remote_slot(v_dsn, v_sub.sub_slot_name, sub_drop.subscription_name || '_cleanup');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'could not drop slot "%" on the provider: %', v_sub.sub_slot_name, SQLERRM;
    END;
    IF EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = v_sub.sub_slot_name) THEN
        PERFORM pg_replication_origin_drop(v_sub.sub_slot_name);
    END IF;
    RETURN 1;
END $$;

CREATE FUNCTION spock.sub_enable(subscription_name name, immediate boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE v_sub spock.subscription := spock.subscription_named(sub_enable.subscription_name);
BEGIN
    UPDATE spock.subscription SET sub_enabled = true WHERE sub_id = v_sub.sub_id;
    PERFORM spock.subscriptions_changed();
    RETURN true;
END $$;

-- The remote transaction with this commit LSN is skipped by the apply worker (see
-- spock.exception_log's SUB_DISABLE entries for the LSN of a failing one).
CREATE FUNCTION spock.sub_alter_skiplsn(subscription_name name, lsn pg_lsn)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE v_sub spock.subscription := spock.subscription_named(sub_alter_skiplsn.subscription_name);
BEGIN
    UPDATE spock.subscription SET sub_skip_lsn = sub_alter_skiplsn.lsn WHERE sub_id = v_sub.sub_id;
    RETURN true;
END $$;
REVOKE EXECUTE ON FUNCTION spock.sub_alter_skiplsn(name, pg_lsn) FROM PUBLIC;

CREATE FUNCTION spock.sub_disable(subscription_name name, immediate boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE v_sub spock.subscription := spock.subscription_named(sub_disable.subscription_name);
BEGIN
    UPDATE spock.subscription SET sub_enabled = false WHERE sub_id = v_sub.sub_id;
    PERFORM spock.subscriptions_changed();
    RETURN true;
END $$;

CREATE FUNCTION spock.sub_add_repset(subscription_name name, replication_set name)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE v_sub spock.subscription := spock.subscription_named(sub_add_repset.subscription_name);
BEGIN
    IF sub_add_repset.replication_set::text = ANY (coalesce(v_sub.sub_replication_sets, '{}')) THEN
        RETURN false;
    END IF;
    UPDATE spock.subscription
       SET sub_replication_sets = coalesce(sub_replication_sets, '{}') || sub_add_repset.replication_set::text
     WHERE sub_id = v_sub.sub_id;
    RETURN true;
END $$;

CREATE FUNCTION spock.sub_remove_repset(subscription_name name, replication_set name)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE v_sub spock.subscription := spock.subscription_named(sub_remove_repset.subscription_name);
BEGIN
    IF NOT sub_remove_repset.replication_set::text = ANY (coalesce(v_sub.sub_replication_sets, '{}')) THEN
        RETURN false;
    END IF;
    UPDATE spock.subscription
       SET sub_replication_sets = nullif(array_remove(sub_replication_sets, sub_remove_repset.replication_set::text), '{}')
     WHERE sub_id = v_sub.sub_id;
    RETURN true;
END $$;

CREATE FUNCTION spock.sub_show_status(subscription_name name DEFAULT NULL,
    OUT subscription_name text, OUT status text, OUT provider_node text, OUT provider_dsn text,
    OUT slot_name text, OUT replication_sets text[], OUT forward_origins text[])
RETURNS SETOF record LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT s.sub_name::text,
           CASE WHEN NOT s.sub_enabled THEN 'disabled'
                -- No worker, or one that heard nothing from the provider for a while (it
                -- says so in its activity): the provider is paused, cut off or hung.
                WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                  WHERE a.backend_type = 'spock apply' AND a.datname = current_database()
                                    AND a.application_name = s.sub_slot_name
                                    AND a.query NOT LIKE 'stalled:%') THEN 'down'
                -- A table whose copy failed ('e') does not hold the subscription back.
                WHEN EXISTS (SELECT 1 FROM spock.local_sync_status y
                              WHERE y.sync_subid = s.sub_id AND y.sync_status NOT IN ('r', 'e')) THEN 'initializing'
                ELSE 'replicating' END,
           n.node_name::text, spock.spock_mask_dsn(i.if_dsn), s.sub_slot_name::text,
           s.sub_replication_sets, s.sub_forward_origins
      FROM spock.subscription s
      JOIN spock.local_node l ON l.node_id = s.sub_target
      JOIN spock.node n ON n.node_id = s.sub_origin
      JOIN spock.node_interface i ON i.if_id = s.sub_origin_if
     WHERE $1 IS NULL OR s.sub_name = $1
     ORDER BY s.sub_name
$$;
-- Slot names, DSNs and worker state: superusers only (upstream: no schema USAGE for PUBLIC).
-- The DSN is shown with its password masked even so.
REVOKE EXECUTE ON FUNCTION spock.sub_show_status(name) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION
    spock.spock_remote_node_info(text, text),
    spock.spock_check_connection(text, text),
    spock.spock_drop_remote_slot(text, text, text),
    spock.spock_remote_slot_exists(text, text, text),
    spock.spock_mask_dsn(text),
    spock.sub_create(name, text, text[], boolean, boolean, text[], interval, boolean, boolean, text[]),
    spock.sub_drop(name, boolean),
    spock.sub_enable(name, boolean),
    spock.sub_disable(name, boolean),
    spock.sub_add_repset(name, name),
    spock.sub_remove_repset(name, name)
FROM PUBLIC;

-- Waiting for and reporting synchronisation.

CREATE FUNCTION spock.sub_wait_for_sync(subscription_name name) RETURNS void
LANGUAGE plpgsql STRICT VOLATILE SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(sub_wait_for_sync.subscription_name);
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM spock.spock_error('25000', 'spock.sub_wait_for_sync() can only be used in READ COMMITTED transactions');
    END IF;
    -- Each statement sees the apply worker's latest commit. It returns once every table is
    -- copied and fails as soon as waiting cannot end well: a copy failed, or the subscription
    -- was disabled (also use statement_timeout).
    LOOP
        PERFORM spock.sync_wait_check(v_sub, NULL, NULL);
        EXIT WHEN EXISTS (SELECT 1 FROM spock.local_sync_status
                           WHERE sync_subid = v_sub.sub_id AND sync_nspname IS NULL AND sync_status = 'r')
              AND NOT EXISTS (SELECT 1 FROM spock.local_sync_status
                               WHERE sync_subid = v_sub.sub_id AND sync_status <> 'r');
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;

-- Raises the error a wait for a subscription's (or one table's) copy ends with when it cannot
-- end well.
CREATE FUNCTION spock.sync_wait_check(p_sub spock.subscription, p_nsp name, p_rel name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    v_failed record;
BEGIN
    SELECT y.sync_nspname, y.sync_relname, e.error_message INTO v_failed
      FROM spock.local_sync_status y
      LEFT JOIN LATERAL (SELECT x.error_message FROM spock.exception_log x
                          WHERE x.operation = 'SYNC' AND x.table_schema = y.sync_nspname
                            AND x.table_name = y.sync_relname
                          ORDER BY x.retry_errored_at DESC LIMIT 1) e ON true
     WHERE y.sync_subid = p_sub.sub_id AND y.sync_status = 'e'
       AND (p_nsp IS NULL OR (y.sync_nspname = p_nsp AND y.sync_relname = p_rel))
     LIMIT 1;
    IF FOUND THEN
        PERFORM spock.spock_error('55000', format('copying table %s.%s of subscription "%s" failed', v_failed.sync_nspname, v_failed.sync_relname, p_sub.sub_name),
            coalesce(v_failed.error_message, ''), NULL);
    END IF;
    IF NOT (SELECT sub_enabled FROM spock.subscription WHERE sub_id = p_sub.sub_id) THEN
        PERFORM spock.spock_error('55000', format('subscription "%s" is disabled', p_sub.sub_name));
    END IF;
END $$;

CREATE FUNCTION spock.table_wait_for_sync(subscription_name name, relation regclass) RETURNS void
LANGUAGE plpgsql STRICT VOLATILE SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(table_wait_for_sync.subscription_name);
    v_nsp name;
    v_rel name;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM spock.spock_error('25000', 'spock.table_wait_for_sync() can only be used in READ COMMITTED transactions');
    END IF;
    SELECT n.nspname, c.relname INTO v_nsp, v_rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = table_wait_for_sync.relation;
    LOOP
        PERFORM spock.sync_wait_check(v_sub, v_nsp, v_rel);
        EXIT WHEN EXISTS (SELECT 1 FROM spock.local_sync_status
                           WHERE sync_subid = v_sub.sub_id AND sync_nspname IS NULL AND sync_status = 'r')
              AND NOT EXISTS (SELECT 1 FROM spock.local_sync_status
                               WHERE sync_subid = v_sub.sub_id AND sync_nspname = v_nsp
                                 AND sync_relname = v_rel AND sync_status <> 'r');
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;

CREATE FUNCTION spock.sub_show_table(subscription_name name, relation regclass,
    OUT nspname text, OUT relname text, OUT status text)
RETURNS record LANGUAGE plpgsql STRICT STABLE SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(sub_show_table.subscription_name);
    v_code "char";
BEGIN
    SELECT n.nspname, c.relname INTO nspname, relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = sub_show_table.relation;
    SELECT sync_status INTO v_code FROM spock.local_sync_status
     WHERE sync_subid = v_sub.sub_id AND sync_nspname = nspname AND sync_relname = relname;
    status := CASE v_code WHEN 'i' THEN 'sync_init' WHEN 's' THEN 'sync_structure' WHEN 'd' THEN 'sync_data'
                          WHEN 'c' THEN 'sync_constraints' WHEN 'w' THEN 'sync_waiting' WHEN 'u' THEN 'catchup'
                          WHEN 'y' THEN 'synchronized' WHEN 'r' THEN 'replicating'
                          -- ours: the copy failed for a reason another try cannot fix
                          WHEN 'e' THEN 'sync_failed' ELSE 'unknown' END;
END $$;

REVOKE EXECUTE ON FUNCTION
    spock.sync_wait_check(spock.subscription, name, name),
    spock.sub_wait_for_sync(name),
    spock.table_wait_for_sync(name, regclass),
    spock.sub_show_table(name, regclass)
FROM PUBLIC;

CREATE FUNCTION spock.spock_max_proto_version() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 4';
CREATE FUNCTION spock.spock_min_proto_version() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 3';

-- Switches the subscription to another interface (DSN) of its provider; the apply worker
-- restarts and reconnects through it once this commits.
CREATE FUNCTION spock.sub_alter_interface(subscription_name name, interface_name name)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(sub_alter_interface.subscription_name);
    v_if oid;
BEGIN
    SELECT if_id INTO v_if FROM spock.node_interface
     WHERE if_nodeid = v_sub.sub_origin AND if_name = sub_alter_interface.interface_name;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('interface "%s" not found for the provider of subscription "%s"', sub_alter_interface.interface_name, v_sub.sub_name));
    END IF;
    IF v_if = v_sub.sub_origin_if THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(v_sub.sub_id::bigint + (1::bigint << 40));
    UPDATE spock.subscription SET sub_origin_if = v_if WHERE sub_id = v_sub.sub_id;
    PERFORM pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity a
      WHERE a.backend_type = 'spock apply' AND a.datname = current_database()
        AND a.application_name = v_sub.sub_slot_name;
    RETURN true;
END $$;

REVOKE EXECUTE ON FUNCTION spock.sub_alter_interface(name, name) FROM PUBLIC;

-- Monitoring.

-- Running apply workers of this database, found by backend type and application_name (the
-- worker sets it to its slot name).
CREATE FUNCTION spock.get_apply_worker_status(OUT worker_pid bigint, OUT worker_dboid int,
    OUT worker_subid bigint, OUT worker_status text)
RETURNS SETOF record LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    -- A live worker is running whether or not it is applying something right now.
    SELECT a.pid::bigint, a.datid::int, s.sub_id::bigint, 'running'::text
      FROM pg_stat_activity a JOIN spock.subscription s ON s.sub_slot_name = a.application_name
     WHERE a.backend_type = 'spock apply' AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
$$;
REVOKE EXECUTE ON FUNCTION spock.get_apply_worker_status() FROM PUBLIC;

-- Replication lag per (origin, receiver), from the progress the apply workers record.
CREATE VIEW spock.lag_tracker AS
    SELECT o.node_name AS origin_name, r.node_name AS receiver_name,
           max(p.remote_commit_ts) AS commit_timestamp,
           max(p.remote_lsn) AS last_received_lsn,
           max(p.remote_insert_lsn) AS remote_insert_lsn,
           CASE WHEN bool_and(p.updated_by_decode)
                THEN pg_wal_lsn_diff(max(p.remote_insert_lsn), max(p.remote_lsn)) ELSE 0 END
               AS replication_lag_bytes,
           CASE WHEN bool_and(p.updated_by_decode) THEN now() - max(p.remote_commit_ts)
                ELSE now() - max(p.last_updated_ts) END AS replication_lag
      FROM spock.progress p
      JOIN spock.subscription s ON s.sub_origin = p.remote_node_id AND s.sub_target = p.node_id
      JOIN spock.node o ON o.node_id = p.remote_node_id
      JOIN spock.node r ON r.node_id = p.node_id
     GROUP BY o.node_name, r.node_name;
-- Views carry no PUBLIC privilege by default; said explicitly for the monitoring ones, which
-- show node names, LSNs and statistics (upstream: superusers only, no schema USAGE).
REVOKE ALL ON spock.lag_tracker FROM PUBLIC;

-- Delta apply: the value a delta column gets when a remote UPDATE moved it from old_value to
-- new_value while the local row holds local_value (attribute option
-- delta_apply_function = spock.delta_apply). A missing old value means "take the new one".
CREATE FUNCTION spock.delta_apply(old_value int2, new_value int2, local_value int2) RETURNS int2
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value int4, new_value int4, local_value int4) RETURNS int4
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value int8, new_value int8, local_value int8) RETURNS int8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value float4, new_value float4, local_value float4) RETURNS float4
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value float8, new_value float8, local_value float8) RETURNS float8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value numeric, new_value numeric, local_value numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';
CREATE FUNCTION spock.delta_apply(old_value money, new_value money, local_value money) RETURNS money
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN old_value IS NULL OR local_value IS NULL THEN new_value
                    ELSE local_value + (new_value - old_value) END';

-- Per-table synchronisation while a subscription streams. The apply worker copies every table
-- whose status is not 'r' under a fresh snapshot (keeping rows already here) within a second.

CREATE FUNCTION spock.spock_remote_tables(dsn text, sets text[], appname text)
RETURNS TABLE (nspname text, relname text)
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_remote_tables_wrapper';
CREATE FUNCTION spock.spock_message(mtype integer, node_id oid) RETURNS bytea
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'spock_message_wrapper';

-- While on, the transaction's DML and TRUNCATE stay on this node (the output plugin drops them).
-- The switch is a write to a superuser-only table, which the output plugin sees in the
-- stream (anyone may emit a logical message, so a message alone cannot be trusted); the
-- upstream message is written too, for its LSN.
CREATE FUNCTION spock.spock_set_repair_mode(enabled boolean) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'spock_set_repair_mode_wrapper';
REVOKE EXECUTE ON FUNCTION spock.spock_set_repair_mode(boolean) FROM PUBLIC;
CREATE TABLE IF NOT EXISTS spock.repair_mode_switch (enabled boolean NOT NULL);
REVOKE ALL ON spock.repair_mode_switch FROM PUBLIC;
CREATE FUNCTION spock.repair_mode(enabled boolean) RETURNS pg_lsn
LANGUAGE plpgsql STRICT VOLATILE SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO spock.repair_mode_switch VALUES (enabled);
    DELETE FROM spock.repair_mode_switch;
    -- spock.replication_repair_mode, for this transaction: DDL run meanwhile is not queued.
    PERFORM spock.spock_set_repair_mode(enabled);
    RETURN pg_logical_emit_message(true, 'Spock', spock.spock_message(CASE WHEN enabled THEN 1 ELSE 2 END, 0));
END $$;

-- Empties a table on this node only (repair mode), before it is copied again.
CREATE FUNCTION spock.truncate_locally(relation regclass) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
BEGIN
    PERFORM spock.repair_mode(true);
    EXECUTE format('TRUNCATE %s', relation);
    PERFORM spock.repair_mode(false);
END $$;

CREATE FUNCTION spock.sub_alter_sync(subscription_name name, truncate boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(sub_alter_sync.subscription_name);
    v_dsn text;
    v_nsps text[] := '{}';
    v_rels text[] := '{}';
    v_rel regclass;
    r record;
BEGIN
    SELECT if_dsn INTO v_dsn FROM spock.node_interface WHERE if_id = v_sub.sub_origin_if;
    FOR r IN SELECT * FROM spock.spock_remote_tables(v_dsn, coalesce(v_sub.sub_replication_sets, '{}'),
                                                     v_sub.sub_name || '_sync') LOOP
        v_nsps := v_nsps || r.nspname;
        v_rels := v_rels || r.relname;
        CONTINUE WHEN EXISTS (SELECT 1 FROM spock.local_sync_status
                               WHERE sync_subid = v_sub.sub_id AND sync_nspname = r.nspname
                                 AND sync_relname = r.relname);
        v_rel := to_regclass(format('%I.%I', r.nspname, r.relname));
        IF v_rel IS NULL THEN
            RAISE WARNING 'table %.% of subscription "%" does not exist here; it is not synchronised',
                r.nspname, r.relname, v_sub.sub_name;
            CONTINUE;
        END IF;
        IF sub_alter_sync.truncate THEN
            PERFORM spock.truncate_locally(v_rel);
        END IF;
        INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, sync_status, sync_statuslsn)
            VALUES ('d', v_sub.sub_id, r.nspname, r.relname, 'i', '0/0');
    END LOOP;
    DELETE FROM spock.local_sync_status s
     WHERE s.sync_subid = v_sub.sub_id AND s.sync_nspname IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM unnest(v_nsps, v_rels) o(n, t)
                        WHERE o.n = s.sync_nspname AND o.t = s.sync_relname);
    RETURN true;
END $$;

CREATE FUNCTION spock.sub_resync_table(subscription_name name, relation regclass, truncate boolean DEFAULT true)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sub spock.subscription := spock.subscription_named(sub_resync_table.subscription_name);
    v_nsp name;
    v_rel name;
BEGIN
    SELECT n.nspname, c.relname INTO v_nsp, v_rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = sub_resync_table.relation;
    IF sub_resync_table.truncate THEN
        PERFORM spock.truncate_locally(sub_resync_table.relation);
    END IF;
    INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, sync_status, sync_statuslsn)
        VALUES ('d', v_sub.sub_id, v_nsp, v_rel, 'i', '0/0')
        ON CONFLICT (sync_subid, sync_nspname, sync_relname)
        DO UPDATE SET sync_status = 'i', sync_statuslsn = '0/0';
    RETURN true;
END $$;

-- Sync events: a marker in the provider's stream, and a wait on a subscriber until it is applied.
CREATE FUNCTION spock.sync_event() RETURNS pg_lsn
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT pg_logical_emit_message(true, 'Spock', spock.spock_message(3, spock.local_node_id()))
$$;

CREATE PROCEDURE spock.wait_for_sync_event(OUT result bool, origin_id oid, lsn pg_lsn, timeout int DEFAULT 0)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_applied pg_lsn;
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM spock.subscription s JOIN spock.local_node l ON l.node_id = s.sub_target
                        WHERE s.sub_origin = wait_for_sync_event.origin_id AND s.sub_enabled) THEN
            PERFORM spock.spock_error('55000', format('no enabled subscription from node %s to the local node', origin_id));
        END IF;
        SELECT p.remote_lsn INTO v_applied FROM spock.progress p JOIN spock.local_node l ON l.node_id = p.node_id
         WHERE p.remote_node_id = wait_for_sync_event.origin_id;
        IF v_applied >= wait_for_sync_event.lsn THEN
            result := true;
            RETURN;
        END IF;
        IF timeout > 0 AND clock_timestamp() >= v_start + timeout * interval '1 second' THEN
            result := false;
            RETURN;
        END IF;
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;

CREATE PROCEDURE spock.wait_for_sync_event(OUT result bool, origin name, lsn pg_lsn, timeout int DEFAULT 0)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_origin oid;
BEGIN
    SELECT node_id INTO v_origin FROM spock.node WHERE node_name = wait_for_sync_event.origin;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('Origin node ''%s'' not found', origin));
    END IF;
    CALL spock.wait_for_sync_event(result, v_origin, lsn, timeout);
END $$;

REVOKE EXECUTE ON FUNCTION
    spock.spock_remote_tables(text, text[], text),
    spock.repair_mode(boolean),
    spock.truncate_locally(regclass),
    spock.sub_alter_sync(name, boolean),
    spock.sub_resync_table(name, regclass, boolean),
    spock.sync_event()
FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE
    spock.wait_for_sync_event(OUT bool, oid, pg_lsn, integer),
    spock.wait_for_sync_event(OUT bool, name, pg_lsn, integer)
FROM PUBLIC;

-- Provider-side description of a table for a subscriber's copy: its replicated columns (the
-- union of the sets' column lists; all of them when a set has no list or the table is in none
-- of the sets) and whether a row filter applies.
CREATE FUNCTION spock.repset_show_table(relation regclass, repsets text[], OUT relid oid, OUT nspname text,
    OUT relname text, OUT att_list text[], OUT has_row_filter boolean, OUT relkind "char",
    OUT relispartition boolean)
RETURNS record LANGUAGE sql STRICT STABLE SET search_path = pg_catalog AS $$
    WITH m AS (
        SELECT t.set_att_list, t.set_row_filter FROM spock.replication_set_table t
          JOIN spock.replication_set s ON s.set_id = t.set_id
          JOIN spock.local_node l ON l.node_id = s.set_nodeid
         WHERE t.set_reloid = relation AND s.set_name = ANY (repsets))
    SELECT c.oid, n.nspname::text, c.relname::text,
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND (NOT EXISTS (SELECT 1 FROM m WHERE m.set_att_list IS NOT NULL)
                         OR EXISTS (SELECT 1 FROM m WHERE m.set_att_list IS NULL)
                         OR EXISTS (SELECT 1 FROM m WHERE a.attname::text = ANY (m.set_att_list)))
                  ORDER BY a.attnum),
           EXISTS (SELECT 1 FROM m WHERE m.set_row_filter IS NOT NULL), c.relkind, c.relispartition
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relation
       -- every named set must exist (ERROR otherwise, as upstream)
       AND (SELECT count(*) FROM unnest(repsets) r, LATERAL spock.local_repset(r::name) l) >= 0
$$;

-- The table's rows that pass the row filters of the given sets (any of them, as upstream).
CREATE FUNCTION spock.table_data_filtered(reltyp anyelement, relation regclass, repsets text[])
RETURNS SETOF anyelement LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    v_filter text;
BEGIN
    SELECT CASE WHEN bool_or(t.set_row_filter IS NULL) THEN 'true'
                ELSE string_agg('(' || pg_get_expr(t.set_row_filter, t.set_reloid) || ')', ' OR ') END
      INTO v_filter
      FROM spock.replication_set_table t
      JOIN spock.replication_set s ON s.set_id = t.set_id
      JOIN spock.local_node l ON l.node_id = s.set_nodeid
     WHERE t.set_reloid = relation AND s.set_name = ANY (repsets);
    RETURN QUERY EXECUTE format('SELECT * FROM %s WHERE %s', relation, coalesce(v_filter, 'false'));
END $$;

REVOKE EXECUTE ON FUNCTION
    spock.repset_show_table(regclass, text[]),
    spock.table_data_filtered(anyelement, regclass, text[])
FROM PUBLIC;

-- DDL replication: the command runs here as `role` with `search_path`, and is queued for the
-- given sets; subscribers run it at the same place in the stream.
CREATE FUNCTION spock.spock_check_ddl(command text) RETURNS void
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'spock_check_ddl_wrapper';

CREATE FUNCTION spock.replicate_ddl(command text, replication_sets text[] DEFAULT '{ddl_sql}',
    search_path text DEFAULT current_setting('search_path'), role text DEFAULT CURRENT_USER)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_node oid := spock.local_node_id();
    v_set text;
    v_path text;
    v_role text := pg_catalog.current_setting('role');
    v_old_path text := pg_catalog.current_setting('search_path');
BEGIN
    IF command IS NULL OR replication_sets IS NULL OR search_path IS NULL OR role IS NULL THEN
        PERFORM spock.spock_error('22004', 'spock.replicate_ddl() arguments cannot be NULL');
    END IF;
    FOREACH v_set IN ARRAY replication_sets LOOP
        IF NOT EXISTS (SELECT 1 FROM spock.replication_set s
                        WHERE s.set_nodeid = v_node AND s.set_name = v_set) THEN
            PERFORM spock.spock_error('42704', format('replication set %s not found', v_set));
        END IF;
    END LOOP;
    PERFORM spock.spock_check_ddl(command);
    -- Validates the path the way SET does, and quotes it for the queued copy.
    PERFORM pg_catalog.set_config('search_path', search_path, true);
    -- The effective schemas, each quoted: the queued text cannot carry anything else.
    SELECT coalesce(string_agg(pg_catalog.quote_ident(n), ', '), '''''') INTO v_path
      FROM unnest(pg_catalog.current_schemas(false)) n;
    INSERT INTO spock.queue (queued_at, role, replication_sets, message_type, message)
        VALUES (pg_catalog.now(), role, replication_sets, 'Q',
                pg_catalog.to_json(
                    -- Subscribers read the command as it is read here (backslashes in literals).
                    CASE WHEN pg_catalog.current_setting('standard_conforming_strings') = 'off'
                         THEN 'SET standard_conforming_strings TO off; ' ELSE '' END
                    || 'SET search_path TO ' || v_path || '; ' || command));
    -- Set while still a superuser: the flag is superuser-only.
    PERFORM pg_catalog.set_config('spock.in_replicate_ddl', 'on', true);
    PERFORM pg_catalog.set_config('role', role, true);
    EXECUTE command;
    PERFORM pg_catalog.set_config('role', v_role, true);
    PERFORM pg_catalog.set_config('spock.in_replicate_ddl', 'off', true);
    PERFORM pg_catalog.set_config('search_path', v_old_path, true);
    RETURN true;
END $$;

CREATE FUNCTION spock.replicate_ddl(command text[], replication_sets text[] DEFAULT '{ddl_sql}',
    search_path text DEFAULT current_setting('search_path'), role text DEFAULT CURRENT_USER)
RETURNS SETOF boolean LANGUAGE sql AS $$
    SELECT spock.replicate_ddl(c, replication_sets, search_path, role) FROM unnest(command) c
$$;

REVOKE EXECUTE ON FUNCTION
    spock.spock_check_ddl(text),
    spock.replicate_ddl(text, text[], text, text),
    spock.replicate_ddl(text[], text[], text, text)
FROM PUBLIC;

-- Sequences: a subscriber's copy of a sequence moves only when the provider pushes a value
-- through the queue ('S'), with sync_seq or when the sequence joins a set with
-- synchronize_data. The pushed value runs ahead of the provider's by the cache size, so ids
-- the provider hands out meanwhile are not handed out again after a switch-over.

-- The value a subscriber should set: the provider's current value plus the cache size.
CREATE FUNCTION spock.sequence_push_value(p_seq regclass) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_current bigint;
    v_state spock.sequence_state;
BEGIN
    EXECUTE format('SELECT last_value FROM %s', p_seq) INTO v_current;
    -- (a user catalog table: no ON CONFLICT)
    IF NOT EXISTS (SELECT 1 FROM spock.sequence_state WHERE seqoid = p_seq) THEN
        INSERT INTO spock.sequence_state (seqoid, cache_size, last_value) VALUES (p_seq, 1000, v_current);
    END IF;
    UPDATE spock.sequence_state SET last_value = v_current + cache_size
     WHERE seqoid = p_seq RETURNING * INTO v_state;
    RETURN v_state.last_value;
END $$;

-- Queues the sequence's value for the given sets.
CREATE FUNCTION spock.queue_sequence(p_seq regclass, p_sets text[]) RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
    INSERT INTO spock.queue (queued_at, role, replication_sets, message_type, message)
    SELECT now(), current_user, p_sets, 'S',
           json_build_object('schema_name', n.nspname, 'sequence_name', c.relname,
                             'last_value', spock.sequence_push_value(p_seq))
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_seq
$$;

CREATE FUNCTION spock.repset_add_seq(set_name name, relation regclass, synchronize_data boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_add_seq.set_name);
    v_current bigint;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = repset_add_seq.relation) <> 'S' THEN
        PERFORM spock.spock_error('42809', format('%s is not a sequence', repset_add_seq.relation));
    END IF;
    INSERT INTO spock.replication_set_seq (set_id, set_seqoid) VALUES (v_set.set_id, repset_add_seq.relation);
    EXECUTE format('SELECT last_value FROM %s', repset_add_seq.relation) INTO v_current;
    IF NOT EXISTS (SELECT 1 FROM spock.sequence_state WHERE seqoid = repset_add_seq.relation) THEN
        INSERT INTO spock.sequence_state (seqoid, cache_size, last_value)
            VALUES (repset_add_seq.relation, 1000, v_current);
    END IF;
    IF repset_add_seq.synchronize_data THEN
        PERFORM spock.queue_sequence(repset_add_seq.relation, ARRAY[v_set.set_name::text]);
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION spock.repset_add_all_seqs(set_name name, schema_names text[], synchronize_data boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_add_all_seqs.set_name);
    v_seq regclass;
BEGIN
    FOR v_seq IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'S' AND n.nspname = ANY (repset_add_all_seqs.schema_names)
                    AND NOT EXISTS (SELECT 1 FROM spock.replication_set_seq s
                                     WHERE s.set_id = v_set.set_id AND s.set_seqoid = c.oid)
                  ORDER BY c.oid LOOP
        PERFORM spock.repset_add_seq(v_set.set_name, v_seq, repset_add_all_seqs.synchronize_data);
    END LOOP;
    RETURN true;
END $$;

CREATE FUNCTION spock.repset_remove_seq(set_name name, relation regclass)
RETURNS boolean LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_set spock.replication_set := spock.local_repset(repset_remove_seq.set_name);
BEGIN
    DELETE FROM spock.replication_set_seq WHERE set_id = v_set.set_id AND set_seqoid = repset_remove_seq.relation;
    IF NOT FOUND THEN
        PERFORM spock.spock_error('42704', format('Sequence %s not found in replication set %s', repset_remove_seq.relation, v_set.set_name));
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION spock.sync_seq(relation regclass) RETURNS boolean
LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_sets text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = sync_seq.relation AND relkind = 'S')
       OR NOT EXISTS (SELECT 1 FROM spock.sequence_state WHERE seqoid = sync_seq.relation) THEN
        PERFORM spock.spock_error('22023', format('%s is not a replicated sequence', sync_seq.relation));
    END IF;
    SELECT array_agg(s.set_name::text ORDER BY s.set_name) INTO v_sets
      FROM spock.replication_set_seq q JOIN spock.replication_set s ON s.set_id = q.set_id
     WHERE q.set_seqoid = sync_seq.relation AND s.set_nodeid = spock.local_node_id();
    PERFORM spock.queue_sequence(sync_seq.relation, coalesce(v_sets, '{}'));
    RETURN true;
END $$;

REVOKE EXECUTE ON FUNCTION
    spock.sequence_push_value(regclass),
    spock.queue_sequence(regclass, text[]),
    spock.repset_add_seq(name, regclass, boolean),
    spock.repset_add_all_seqs(name, text[], boolean),
    spock.repset_remove_seq(name, regclass),
    spock.sync_seq(regclass)
FROM PUBLIC;

-- Smaller parts of the 5.0.5 API.

CREATE FUNCTION spock.get_country() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT current_setting('spock.country', true) $$;

-- Chained md5 over ordered rows, for comparing tables between nodes:
-- SELECT spock.md5_agg() WITHIN GROUP (ORDER BY t) FROM t.
CREATE FUNCTION spock.md5_agg_sfunc(text, anyelement) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT md5($1 || $2::text) $$;
CREATE AGGREGATE spock.md5_agg(ORDER BY anyelement) (STYPE = text, SFUNC = spock.md5_agg_sfunc, INITCOND = '');

-- Like pg_xact_commit_timestamp_origin, with the origin given as a spock node id.
CREATE FUNCTION spock.xact_commit_timestamp_origin("xid" xid, OUT "timestamp" timestamptz, OUT "roident" oid)
RETURNS record LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT t.timestamp,
           CASE WHEN t.roident = 0 THEN (SELECT node_id FROM spock.local_node)
                ELSE coalesce((SELECT s.sub_origin FROM pg_replication_origin o
                                 JOIN spock.subscription s ON s.sub_slot_name = o.roname
                                WHERE o.roident = t.roident), t.roident) END
      FROM pg_xact_commit_timestamp_origin($1) t
$$;

-- On a provider: waits until the named slot (or every slot) has confirmed `target` (by default
-- the current WAL insert position).
CREATE FUNCTION spock.wait_slot_confirm_lsn(slotname name, target pg_lsn) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_target pg_lsn := coalesce(target, pg_current_wal_insert_lsn());
    v_idle_since timestamptz;
BEGIN
    IF slotname IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = slotname) THEN
        PERFORM spock.spock_error('42704', format('replication slot "%s" does not exist', slotname));
    END IF;
    WHILE EXISTS (SELECT 1 FROM pg_replication_slots
                   WHERE (slotname IS NULL OR slot_name = slotname)
                     AND slot_type = 'logical' AND confirmed_flush_lsn < v_target) LOOP
        -- A slot that nobody streams from for 30 s will not move: say so instead of
        -- waiting forever.
        IF EXISTS (SELECT 1 FROM pg_replication_slots
                    WHERE (slotname IS NULL OR slot_name = slotname) AND slot_type = 'logical'
                      AND confirmed_flush_lsn < v_target AND NOT active) THEN
            v_idle_since := coalesce(v_idle_since, clock_timestamp());
            IF clock_timestamp() > v_idle_since + interval '30 seconds' THEN
                PERFORM spock.spock_error('55000', format('replication slot is not in use and stays behind %s', v_target));
            END IF;
        ELSE
            v_idle_since := NULL;
        END IF;
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;

-- false as soon as the subscription's apply worker is not running; true once `timeout` ms have
-- passed with it running (0: wait as long as it runs).
CREATE FUNCTION spock.wait_for_apply_worker(p_subbid bigint, timeout int DEFAULT 0) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM spock.get_apply_worker_status() w
                        WHERE w.worker_subid = p_subbid AND w.worker_status = 'running') THEN
            RETURN false;
        END IF;
        IF timeout > 0 AND clock_timestamp() >= v_start + timeout * interval '1 millisecond' THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

-- Cancels every other client backend that is inside a transaction (for read-only switch-overs).
CREATE FUNCTION spock.terminate_active_transactions() RETURNS boolean
LANGUAGE sql SET search_path = pg_catalog AS $$
    SELECT count(pg_cancel_backend(a.pid)) >= 0 FROM pg_stat_activity a
     WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
       AND a.xact_start IS NOT NULL
$$;

-- Adds a partition (or all) of a partitioned table to every set holding the parent, with the
-- parent's column list and row filter unless another filter is given.
CREATE FUNCTION spock.repset_add_partition_in_path(parent regclass, partition regclass,
    row_filter text, caller_search_path text)
RETURNS int LANGUAGE plpgsql CALLED ON NULL INPUT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_count int := 0;
    m record;
    v_part regclass;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = repset_add_partition_in_path.parent) <> 'p' THEN
        RETURN 0;
    END IF;
    FOR m IN SELECT t.set_id, t.set_att_list, t.set_row_filter FROM spock.replication_set_table t
              WHERE t.set_reloid = repset_add_partition_in_path.parent LOOP
        FOR v_part IN SELECT relid FROM pg_partition_tree(repset_add_partition_in_path.parent)
                       WHERE relid <> repset_add_partition_in_path.parent AND isleaf
                         AND (repset_add_partition_in_path.partition IS NULL OR relid = repset_add_partition_in_path.partition)
                       ORDER BY relid::text LOOP
            INSERT INTO spock.replication_set_table (set_id, set_reloid, set_att_list, set_row_filter)
                VALUES (m.set_id, v_part, m.set_att_list,
                        CASE WHEN repset_add_partition_in_path.row_filter IS NOT NULL
                             THEN spock.spock_parse_row_filter(v_part, repset_add_partition_in_path.row_filter,
                                                          repset_add_partition_in_path.caller_search_path)
                             WHEN m.set_row_filter IS NOT NULL
                             THEN spock.spock_parse_row_filter(v_part,
                                      pg_get_expr(m.set_row_filter, repset_add_partition_in_path.parent),
                                      'pg_catalog') END);
            PERFORM spock.track_deletes(v_part);
            v_count := v_count + 1;
        END LOOP;
    END LOOP;
    RETURN v_count;
END $$;

CREATE FUNCTION spock.repset_add_partition(parent regclass, partition regclass DEFAULT NULL,
    row_filter text DEFAULT NULL)
RETURNS int LANGUAGE sql CALLED ON NULL INPUT AS $$
    SELECT spock.repset_add_partition_in_path($1, $2, $3, pg_catalog.current_setting('search_path'))
$$;

CREATE FUNCTION spock.repset_remove_partition(parent regclass, partition regclass DEFAULT NULL)
RETURNS int LANGUAGE plpgsql CALLED ON NULL INPUT SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
    v_count int;
BEGIN
    DELETE FROM spock.replication_set_table t
     WHERE t.set_id IN (SELECT set_id FROM spock.replication_set_table WHERE set_reloid = repset_remove_partition.parent)
       AND t.set_reloid IN (SELECT relid FROM pg_partition_tree(repset_remove_partition.parent)
                             WHERE relid <> repset_remove_partition.parent
                               AND (repset_remove_partition.partition IS NULL OR relid = repset_remove_partition.partition));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

-- spock's older copy of snowflake's conversion; this build hands it to the snowflake extension.
CREATE FUNCTION spock.convert_sequence_to_snowflake(p_seqid regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'snowflake') THEN
        PERFORM spock.spock_error('42704', 'the snowflake extension is not installed',
            NULL, 'CREATE EXTENSION snowflake');
    END IF;
    RETURN snowflake.convert_sequence_to_snowflake(p_seqid);
END $$;

CREATE FUNCTION spock.convert_column_to_int8(p_rel regclass, p_attnum smallint) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'snowflake') THEN
        PERFORM spock.spock_error('42704', 'the snowflake extension is not installed',
            NULL, 'CREATE EXTENSION snowflake');
    END IF;
    RETURN snowflake.convert_column_to_int8(p_rel, p_attnum);
END $$;

REVOKE EXECUTE ON FUNCTION
    spock.wait_for_apply_worker(bigint, integer),
    spock.xact_commit_timestamp_origin(xid),
    spock.wait_slot_confirm_lsn(name, pg_lsn),
    spock.terminate_active_transactions(),
    spock.repset_add_partition(regclass, regclass, text),
    spock.repset_add_partition_in_path(regclass, regclass, text, text),
    spock.repset_remove_partition(regclass, regclass),
    spock.convert_sequence_to_snowflake(regclass),
    spock.convert_column_to_int8(regclass, smallint)
FROM PUBLIC;

-- spock.include_ddl_repset: a table with a replica-identity index goes to `default` (and leaves
-- other sets), one without to `default_insert_only` (and leaves sets that replicate updates or
-- deletes); an unlogged table leaves every set.
CREATE FUNCTION spock.ddl_file_table(relation regclass) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog AS $$
DECLARE
    v_node oid := spock.local_node_id();
    v_target name;
    v_rel pg_class;
BEGIN
    SELECT * INTO v_rel FROM pg_class WHERE oid = relation;
    IF v_rel.relkind NOT IN ('r', 'p') OR v_rel.relispartition THEN
        RETURN;
    END IF;
    IF v_rel.relpersistence <> 'p' THEN
        DELETE FROM spock.replication_set_table t USING spock.replication_set s
         WHERE s.set_id = t.set_id AND s.set_nodeid = v_node AND t.set_reloid = relation;
        RETURN;
    END IF;
    v_target := CASE WHEN spock.has_replica_identity_index(relation) THEN 'default' ELSE 'default_insert_only' END;
    DELETE FROM spock.replication_set_table t USING spock.replication_set s
     WHERE s.set_id = t.set_id AND s.set_nodeid = v_node AND t.set_reloid = relation
       AND s.set_name <> v_target
       AND (v_target = 'default' OR s.replicate_update OR s.replicate_delete);
    IF NOT EXISTS (SELECT 1 FROM spock.replication_set_table t JOIN spock.replication_set s ON s.set_id = t.set_id
                    WHERE s.set_nodeid = v_node AND s.set_name = v_target AND t.set_reloid = relation) THEN
        PERFORM spock.repset_add_table(v_target, relation);
        RAISE LOG 'table ''%'' was added to ''%'' replication set.', v_rel.relname, v_target;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION spock.ddl_file_table(regclass) FROM PUBLIC;

-- Replication counters per subscription and table (subid 0: rows the walsenders sent), kept
-- in shared memory since the server started or the last reset.
CREATE FUNCTION spock.get_channel_stats(
    OUT subid oid, OUT relid oid, OUT n_tup_ins bigint, OUT n_tup_upd bigint,
    OUT n_tup_del bigint, OUT n_conflict bigint, OUT n_dca bigint)
RETURNS SETOF record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'get_channel_stats_wrapper';
CREATE FUNCTION spock.reset_channel_stats() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'reset_channel_stats_wrapper';
-- A C function answers whoever may call it: superusers only (upstream: no schema USAGE).
REVOKE EXECUTE ON FUNCTION spock.get_channel_stats(), spock.reset_channel_stats() FROM PUBLIC;

CREATE VIEW spock.channel_table_stats AS
    SELECT st.subid, st.relid,
           CASE WHEN st.subid = 0 THEN '<output>' ELSE s.sub_name::text END AS sub_name,
           c.relname::text AS table_name,
           st.n_tup_ins, st.n_tup_upd, st.n_tup_del, st.n_conflict, st.n_dca
      FROM spock.get_channel_stats() st
      LEFT JOIN spock.subscription s ON s.sub_id = st.subid
      LEFT JOIN pg_catalog.pg_class c ON c.oid = st.relid;

CREATE VIEW spock.channel_summary_stats AS
    SELECT subid, sub_name, sum(n_tup_ins) AS n_tup_ins, sum(n_tup_upd) AS n_tup_upd,
           sum(n_tup_del) AS n_tup_del, sum(n_conflict) AS n_conflict, sum(n_dca) AS n_dca
      FROM spock.channel_table_stats
     GROUP BY subid, sub_name;
REVOKE ALL ON spock.channel_table_stats, spock.channel_summary_stats FROM PUBLIC;

-- The end of the last local commit at or before a time, from the WAL a logical slot keeps.
CREATE FUNCTION spock.get_lsn_from_commit_ts(slot_name name, commit_ts timestamptz) RETURNS pg_lsn
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'get_lsn_from_commit_ts_wrapper';
REVOKE EXECUTE ON FUNCTION spock.get_lsn_from_commit_ts(name, timestamptz) FROM PUBLIC;

-- Growing and shrinking a live cluster (upstream's "Z0DAN"): run on the node joining or
-- leaving; every node is driven through its DSN (hooks/src/zodan). Superusers only.
CREATE FUNCTION spock.spock_add_node(src_node_name text, src_dsn text, new_node_name text,
    new_node_dsn text, verb boolean, location text, country text, info text) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'spock_add_node_wrapper';
CREATE PROCEDURE spock.add_node(src_node_name text, src_dsn text, new_node_name text,
    new_node_dsn text, verb boolean DEFAULT false, new_node_location text DEFAULT 'NY',
    new_node_country text DEFAULT 'USA', new_node_info jsonb DEFAULT '{}'::jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM spock.spock_add_node(src_node_name, src_dsn, new_node_name, new_node_dsn, verb,
        new_node_location, new_node_country, new_node_info::text);
END $$;
CREATE FUNCTION spock.spock_remove_node(target_node_name text, target_node_dsn text,
    verbose_mode boolean) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'spock_remove_node_wrapper';
CREATE PROCEDURE spock.remove_node(target_node_name text, target_node_dsn text,
    verbose_mode boolean DEFAULT true)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM spock.spock_remove_node(target_node_name, target_node_dsn, verbose_mode);
END $$;
REVOKE EXECUTE ON FUNCTION
    spock.spock_add_node(text, text, text, text, boolean, text, text, text),
    spock.spock_remove_node(text, text, boolean)
FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE
    spock.add_node(text, text, text, text, boolean, text, text, jsonb),
    spock.remove_node(text, text, boolean)
FROM PUBLIC;
