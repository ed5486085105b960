-- spock 5.0.0 as upstream's release scripts install it: the same objects (tables, views,
-- functions) with each C function declared against upstream's symbol, which this library exports
-- (hooks/src/upstream_symbols.rs). Older databases reach this version through the 4.0.x update
-- steps; CREATE EXTENSION spock VERSION '5.0.x' starts here. The update chain ends at this
-- build's own objects (spock--5.0.4--5.0.5.sql).

-- Catalog.

CREATE TABLE spock.node (
    node_id oid NOT NULL PRIMARY KEY,
    node_name name NOT NULL UNIQUE,
    location text,
    country text,
    info jsonb
) WITH (user_catalog_table = true);

CREATE TABLE spock.node_interface (
    if_id oid NOT NULL PRIMARY KEY,
    if_name name NOT NULL,
    if_nodeid oid REFERENCES spock.node(node_id) ON UPDATE CASCADE,
    if_dsn text NOT NULL,
    UNIQUE (if_nodeid, if_name)
);

CREATE TABLE spock.local_node (
    node_id oid PRIMARY KEY REFERENCES spock.node(node_id),
    node_local_interface oid NOT NULL REFERENCES spock.node_interface(if_id)
);

CREATE TABLE spock.subscription (
    sub_id oid NOT NULL PRIMARY KEY,
    sub_name name NOT NULL UNIQUE,
    sub_origin oid NOT NULL REFERENCES spock.node(node_id),
    sub_target oid NOT NULL REFERENCES spock.node(node_id),
    sub_origin_if oid NOT NULL REFERENCES spock.node_interface(if_id),
    sub_target_if oid NOT NULL REFERENCES spock.node_interface(if_id),
    sub_enabled boolean NOT NULL DEFAULT true,
    sub_slot_name name NOT NULL,
    sub_replication_sets text[],
    sub_forward_origins text[],
    sub_apply_delay interval NOT NULL DEFAULT '0',
    sub_force_text_transfer boolean NOT NULL DEFAULT false,
    sub_skip_lsn pg_lsn NOT NULL DEFAULT '0/0'
);

CREATE TABLE spock.local_sync_status (
    sync_kind "char" NOT NULL CHECK (sync_kind IN ('i', 's', 'd', 'f')),
    sync_subid oid NOT NULL REFERENCES spock.subscription(sub_id),
    sync_nspname name,
    sync_relname name,
    sync_status "char" NOT NULL,
    sync_statuslsn pg_lsn NOT NULL,
    UNIQUE (sync_subid, sync_nspname, sync_relname)
);

CREATE TABLE spock.replication_set (
    set_id oid NOT NULL PRIMARY KEY,
    set_nodeid oid NOT NULL REFERENCES spock.node(node_id) ON UPDATE CASCADE,
    set_name name NOT NULL,
    replicate_insert boolean NOT NULL DEFAULT true,
    replicate_update boolean NOT NULL DEFAULT true,
    replicate_delete boolean NOT NULL DEFAULT true,
    replicate_truncate boolean NOT NULL DEFAULT true,
    UNIQUE (set_nodeid, set_name)
) WITH (user_catalog_table = true);

CREATE TABLE spock.replication_set_table (
    set_id oid NOT NULL,
    set_reloid regclass NOT NULL,
    set_att_list text[],
    set_row_filter pg_node_tree,
    PRIMARY KEY (set_id, set_reloid)
) WITH (user_catalog_table = true);

CREATE TABLE spock.replication_set_seq (
    set_id oid NOT NULL,
    set_seqoid regclass NOT NULL,
    PRIMARY KEY (set_id, set_seqoid)
) WITH (user_catalog_table = true);

CREATE TABLE spock.sequence_state (
    seqoid oid NOT NULL PRIMARY KEY,
    cache_size integer NOT NULL,
    last_value bigint NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE spock.depend (
    classid oid NOT NULL,
    objid oid NOT NULL,
    objsubid integer NOT NULL,
    refclassid oid NOT NULL,
    refobjid oid NOT NULL,
    refobjsubid integer NOT NULL,
    deptype "char" NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE spock.queue (
    queued_at timestamptz NOT NULL,
    role name NOT NULL,
    replication_sets text[],
    message_type "char" NOT NULL,
    message json NOT NULL
);

CREATE TABLE spock.exception_log (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    command_counter integer NOT NULL,
    retry_errored_at timestamptz NOT NULL,
    remote_xid bigint NOT NULL,
    local_origin oid,
    local_commit_ts timestamptz,
    table_schema text,
    table_name text,
    operation text,
    local_tup jsonb,
    remote_old_tup jsonb,
    remote_new_tup jsonb,
    ddl_statement text,
    ddl_user text,
    error_message text NOT NULL,
    PRIMARY KEY (remote_origin, remote_commit_ts, command_counter, retry_errored_at)
) WITH (user_catalog_table = true);

CREATE TABLE spock.exception_status (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    retry_errored_at timestamptz NOT NULL,
    remote_xid bigint NOT NULL,
    status text NOT NULL,
    resolved_at timestamptz,
    resolution_details jsonb,
    PRIMARY KEY (remote_origin, remote_commit_ts, retry_errored_at)
) WITH (user_catalog_table = true);

CREATE TABLE spock.exception_status_detail (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    command_counter integer NOT NULL,
    retry_errored_at timestamptz NOT NULL,
    remote_xid bigint NOT NULL,
    status text NOT NULL,
    resolved_at timestamptz,
    resolution_details jsonb,
    PRIMARY KEY (remote_origin, remote_commit_ts, command_counter, retry_errored_at),
    FOREIGN KEY (remote_origin, remote_commit_ts, retry_errored_at)
        REFERENCES spock.exception_status (remote_origin, remote_commit_ts, retry_errored_at)
) WITH (user_catalog_table = true);

CREATE TABLE spock.progress (
    node_id oid NOT NULL,
    remote_node_id oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    remote_lsn pg_lsn NOT NULL,
    remote_insert_lsn pg_lsn NOT NULL,
    last_updated_ts timestamptz NOT NULL,
    updated_by_decode boolean NOT NULL,
    PRIMARY KEY (node_id, remote_node_id)
) WITH (fillfactor = 50);

CREATE TABLE spock.pii (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pii_schema text NOT NULL,
    pii_table text NOT NULL,
    pii_column text NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE spock.resolutions (
    id integer GENERATED ALWAYS AS IDENTITY,
    node_name name NOT NULL,
    log_time timestamptz NOT NULL,
    relname text,
    idxname text,
    conflict_type text,
    conflict_resolution text,
    local_origin integer,
    local_tuple text,
    local_xid xid,
    local_timestamp timestamptz,
    remote_origin integer,
    remote_tuple text,
    remote_xid xid,
    remote_timestamp timestamptz,
    remote_lsn pg_lsn,
    PRIMARY KEY (id, node_name)
) WITH (user_catalog_table = true);


-- Views.

CREATE VIEW spock.tables AS
    WITH set_relations AS (
        SELECT s.set_name, r.set_reloid
          FROM spock.replication_set_table r
          JOIN spock.replication_set s ON s.set_id = r.set_id
          JOIN spock.local_node l ON l.node_id = s.set_nodeid
    ),
    user_tables AS (
        SELECT c.oid AS relid, n.nspname, c.relname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
           AND n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', 'spock')
    )
    SELECT t.relid, t.nspname, t.relname, s.set_name
      FROM user_tables t
      LEFT JOIN set_relations s ON s.set_reloid = t.relid;

CREATE VIEW spock.lag_tracker AS
    SELECT o.node_name AS origin_name, r.node_name AS receiver_name,
           max(p.remote_commit_ts) AS commit_timestamp, max(p.remote_lsn) AS last_received_lsn,
           max(p.remote_insert_lsn) AS remote_insert_lsn,
           CASE WHEN bool_and(p.updated_by_decode)
                THEN pg_catalog.pg_wal_lsn_diff(max(p.remote_insert_lsn), max(p.remote_lsn)) ELSE 0 END
               AS replication_lag_bytes,
           CASE WHEN bool_and(p.updated_by_decode) THEN now() - max(p.remote_commit_ts)
                ELSE now() - max(p.last_updated_ts) END AS replication_lag
      FROM spock.progress p
      JOIN spock.subscription s ON s.sub_origin = p.remote_node_id AND s.sub_target = p.node_id
      JOIN spock.node o ON o.node_id = p.remote_node_id
      JOIN spock.node r ON r.node_id = p.node_id
     GROUP BY o.node_name, r.node_name;

-- C functions (upstream's symbols).

CREATE FUNCTION spock.node_create(node_name name, dsn text, location text DEFAULT NULL, country text DEFAULT NULL, info jsonb DEFAULT NULL)
RETURNS oid CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_create_node';
CREATE FUNCTION spock.node_drop(node_name name, ifexists boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_drop_node';
CREATE FUNCTION spock.node_add_interface(node_name name, interface_name name, dsn text)
RETURNS oid STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_node_add_interface';
CREATE FUNCTION spock.node_drop_interface(node_name name, interface_name name)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_node_drop_interface';
CREATE FUNCTION spock.sub_create(subscription_name name, provider_dsn text,
    replication_sets text[] = '{default,default_insert_only,ddl_sql}', synchronize_structure boolean = false,
    synchronize_data boolean = false, forward_origins text[] = '{}', apply_delay interval DEFAULT '0',
    force_text_transfer boolean = false, enabled boolean = true)
RETURNS oid STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_create_subscription';
CREATE FUNCTION spock.sub_drop(subscription_name name, ifexists boolean DEFAULT false)
RETURNS oid STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_drop_subscription';
CREATE FUNCTION spock.sub_alter_interface(subscription_name name, interface_name name)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_interface';
CREATE FUNCTION spock.sub_disable(subscription_name name, immediate boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_disable';
CREATE FUNCTION spock.sub_enable(subscription_name name, immediate boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_enable';
CREATE FUNCTION spock.sub_add_repset(subscription_name name, replication_set name)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_add_replication_set';
CREATE FUNCTION spock.sub_remove_repset(subscription_name name, replication_set name)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_remove_replication_set';
CREATE FUNCTION spock.sub_alter_skiplsn(subscription_name name, lsn pg_lsn)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_skip_lsn';
CREATE FUNCTION spock.sub_show_status(subscription_name name DEFAULT NULL, OUT subscription_name text, OUT status text,
    OUT provider_node text, OUT provider_dsn text, OUT slot_name text, OUT replication_sets text[],
    OUT forward_origins text[])
RETURNS SETOF record STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_show_subscription_status';
CREATE FUNCTION spock.repset_create(set_name name, replicate_insert boolean = true, replicate_update boolean = true,
    replicate_delete boolean = true, replicate_truncate boolean = true)
RETURNS oid STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_create_replication_set';
CREATE FUNCTION spock.repset_alter(set_name name, replicate_insert boolean DEFAULT NULL, replicate_update boolean DEFAULT NULL,
    replicate_delete boolean DEFAULT NULL, replicate_truncate boolean DEFAULT NULL)
RETURNS oid CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_replication_set';
CREATE FUNCTION spock.repset_drop(set_name name, ifexists boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_drop_replication_set';
CREATE FUNCTION spock.repset_add_table(set_name name, relation regclass, synchronize_data boolean DEFAULT false,
    columns text[] DEFAULT NULL, row_filter text DEFAULT NULL, include_partitions boolean DEFAULT true)
RETURNS boolean CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_add_table';
CREATE FUNCTION spock.repset_add_all_tables(set_name name, schema_names text[], synchronize_data boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_add_all_tables';
CREATE FUNCTION spock.repset_remove_table(set_name name, relation regclass, include_partitions boolean DEFAULT true)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_remove_table';
CREATE FUNCTION spock.repset_add_seq(set_name name, relation regclass, synchronize_data boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_add_sequence';
CREATE FUNCTION spock.repset_add_all_seqs(set_name name, schema_names text[], synchronize_data boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_add_all_sequences';
CREATE FUNCTION spock.repset_remove_seq(set_name name, relation regclass)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_remove_sequence';
CREATE FUNCTION spock.repset_add_partition(parent regclass, partition regclass DEFAULT NULL, row_filter text DEFAULT NULL)
RETURNS integer CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_add_partition';
CREATE FUNCTION spock.repset_remove_partition(parent regclass, partition regclass DEFAULT NULL)
RETURNS integer CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replication_set_remove_partition';
CREATE FUNCTION spock.sub_alter_sync(subscription_name name, truncate boolean DEFAULT false)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_synchronize';
CREATE FUNCTION spock.sub_resync_table(subscription_name name, relation regclass, truncate boolean DEFAULT true)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_alter_subscription_resynchronize_table';
CREATE FUNCTION spock.sync_seq(relation regclass)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_synchronize_sequence';
CREATE FUNCTION spock.table_data_filtered(reltyp anyelement, relation regclass, repsets text[])
RETURNS SETOF anyelement CALLED ON NULL INPUT STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_table_data_filtered';
CREATE FUNCTION spock.repset_show_table(relation regclass, repsets text[], OUT relid oid, OUT nspname text, OUT relname text,
    OUT att_list text[], OUT has_row_filter boolean, OUT relkind "char", OUT relispartition boolean)
RETURNS record STRICT STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_show_repset_table_info';
CREATE FUNCTION spock.sub_show_table(subscription_name name, relation regclass, OUT nspname text, OUT relname text, OUT status text)
RETURNS record STRICT STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_show_subscription_table';
CREATE FUNCTION spock.replicate_ddl(command text, replication_sets text[] DEFAULT '{ddl_sql}', search_path text DEFAULT '',
    role text DEFAULT CURRENT_USER)
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_replicate_ddl_command';
CREATE FUNCTION spock.node_info(OUT node_id oid, OUT node_name text, OUT sysid text, OUT dbname text, OUT replication_sets text,
    OUT location text, OUT country text, OUT info jsonb)
RETURNS record STRICT STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_node_info';
CREATE FUNCTION spock.spock_gen_slot_name(name, name, name)
RETURNS name STRICT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_gen_slot_name';
CREATE FUNCTION spock.spock_version()
RETURNS text STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_version';
CREATE FUNCTION spock.spock_version_num()
RETURNS integer STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_version_num';
CREATE FUNCTION spock.spock_max_proto_version()
RETURNS integer IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_max_proto_version';
CREATE FUNCTION spock.spock_min_proto_version()
RETURNS integer IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_min_proto_version';
CREATE FUNCTION spock.sub_wait_for_sync(subscription_name name)
RETURNS void STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_wait_for_subscription_sync_complete';
CREATE FUNCTION spock.table_wait_for_sync(subscription_name name, relation regclass)
RETURNS void STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_wait_for_table_sync_complete';
CREATE FUNCTION spock.sync_event()
RETURNS pg_lsn STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_create_sync_event';
CREATE FUNCTION spock.xact_commit_timestamp_origin("xid" xid, OUT "timestamp" timestamptz, OUT "roident" oid)
RETURNS record STRICT STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_xact_commit_timestamp_origin';
CREATE FUNCTION spock.reset_channel_stats()
RETURNS void VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'reset_channel_stats';
CREATE FUNCTION spock.terminate_active_transactions()
RETURNS boolean STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spockro_terminate_active_transactions';
CREATE FUNCTION spock.delta_apply(int2, int2, int2)
RETURNS int2 CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_int2';
CREATE FUNCTION spock.delta_apply(int4, int4, int4)
RETURNS int4 CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_int4';
CREATE FUNCTION spock.delta_apply(int8, int8, int8)
RETURNS int8 CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_int8';
CREATE FUNCTION spock.delta_apply(float4, float4, float4)
RETURNS float4 CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_float4';
CREATE FUNCTION spock.delta_apply(float8, float8, float8)
RETURNS float8 CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_float8';
CREATE FUNCTION spock.delta_apply(numeric, numeric, numeric)
RETURNS numeric CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_numeric';
CREATE FUNCTION spock.delta_apply(money, money, money)
RETURNS money CALLED ON NULL INPUT IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'delta_apply_money';
CREATE FUNCTION spock.repair_mode(enabled boolean)
RETURNS pg_lsn STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_repair_mode';
CREATE FUNCTION spock.get_lsn_from_commit_ts(slot_name name, commit_ts timestamptz)
RETURNS pg_lsn STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_get_lsn_from_commit_ts';
CREATE FUNCTION spock.get_apply_worker_status(OUT worker_pid bigint, OUT worker_dboid int, OUT worker_subid bigint,
    OUT worker_status text)
RETURNS SETOF record STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'get_apply_worker_status';
CREATE FUNCTION spock.wait_slot_confirm_lsn(slotname name, target pg_lsn)
RETURNS void CALLED ON NULL INPUT VOLATILE LANGUAGE c AS 'spock', 'spock_wait_slot_confirm_lsn';

-- Statistics.

CREATE FUNCTION spock.get_channel_stats(OUT subid oid, OUT relid oid, OUT n_tup_ins bigint, OUT n_tup_upd bigint,
    OUT n_tup_del bigint, OUT n_conflict bigint, OUT n_dca bigint)
RETURNS SETOF record VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'get_channel_stats';

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

-- SQL functions.

CREATE FUNCTION spock.replicate_ddl(command text[], replication_sets text[] DEFAULT '{ddl_sql}',
    search_path text DEFAULT current_setting('search_path'), role text DEFAULT CURRENT_USER)
RETURNS SETOF boolean STRICT VOLATILE LANGUAGE sql
    AS $$ SELECT spock.replicate_ddl(c, $2, $3, $4) FROM pg_catalog.unnest($1) AS c $$;

CREATE FUNCTION spock.get_country() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT pg_catalog.current_setting('spock.country', true) $$;

CREATE FUNCTION spock.md5_agg_sfunc(text, anyelement) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT pg_catalog.md5($1 || $2::text) $$;
CREATE AGGREGATE spock.md5_agg(ORDER BY anyelement) (STYPE = text, SFUNC = spock.md5_agg_sfunc, INITCOND = '');

-- True once the subscription's apply worker is seen running; false when it is not running, or
-- not within `timeout` milliseconds (0: wait as long as it takes).
CREATE FUNCTION spock.wait_for_apply_worker(p_subbid bigint, timeout int DEFAULT 0) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM spock.get_apply_worker_status() w
                    WHERE w.worker_subid = p_subbid AND w.worker_status = 'running') THEN
            RETURN true;
        END IF;
        IF timeout > 0 AND clock_timestamp() >= v_start + timeout * interval '1 millisecond' THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

-- Waits until this node has applied `lsn` of the origin node's stream (false after `timeout`
-- seconds; 0: no limit).
CREATE PROCEDURE spock.wait_for_sync_event(OUT result bool, origin_id oid, lsn pg_lsn, timeout int DEFAULT 0)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF (SELECT p.remote_lsn FROM spock.progress p JOIN spock.local_node l ON l.node_id = p.node_id
             WHERE p.remote_node_id = origin_id) >= lsn THEN
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
    v_origin oid := (SELECT n.node_id FROM spock.node n WHERE n.node_name = origin);
BEGIN
    IF v_origin IS NULL THEN
        RAISE EXCEPTION 'Origin node ''%'' not found', origin USING ERRCODE = 'undefined_object';
    END IF;
    CALL spock.wait_for_sync_event(result, v_origin, lsn, timeout);
END $$;

-- Older copies of snowflake's conversions (snowflake 2.x has its own).
CREATE FUNCTION spock.convert_column_to_int8(p_rel regclass, p_attnum smallint) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN snowflake.convert_column_to_int8(p_rel, p_attnum);
END $$;

CREATE FUNCTION spock.convert_sequence_to_snowflake(p_seqid regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN snowflake.convert_sequence_to_snowflake(p_seqid);
END $$;
