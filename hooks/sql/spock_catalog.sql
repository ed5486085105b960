-- spock catalog (Spock 5.0.5 layout). Every object lives in the extension schema `spock`.
-- Tables are created IF NOT EXISTS: the update from upstream's objects (spock_from_upstream.sql)
-- runs this whole script over upstream's tables, which have the same layout and keep their rows.

-- Anyone may call the informational functions; the tables and the management functions stay
-- superuser-only.
GRANT USAGE ON SCHEMA spock TO PUBLIC;

CREATE TABLE IF NOT EXISTS spock.node (
    node_id oid NOT NULL PRIMARY KEY,
    node_name name NOT NULL UNIQUE,
    location text,
    country text,
    info jsonb
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.node_interface (
    if_id oid NOT NULL PRIMARY KEY,
    if_name name NOT NULL,
    if_nodeid oid REFERENCES spock.node(node_id) ON UPDATE CASCADE,
    if_dsn text NOT NULL,
    UNIQUE (if_nodeid, if_name)
);

CREATE TABLE IF NOT EXISTS spock.local_node (
    node_id oid PRIMARY KEY REFERENCES spock.node(node_id),
    node_local_interface oid NOT NULL REFERENCES spock.node_interface(if_id)
);

CREATE TABLE IF NOT EXISTS spock.subscription (
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
    sub_skip_lsn pg_lsn NOT NULL DEFAULT '0/0',
    sub_skip_schema text
);

CREATE TABLE IF NOT EXISTS spock.local_sync_status (
    sync_kind "char" NOT NULL CHECK (sync_kind IN ('i', 's', 'd', 'f')),
    sync_subid oid NOT NULL REFERENCES spock.subscription(sub_id),
    sync_nspname name,
    sync_relname name,
    sync_status "char" NOT NULL,
    sync_statuslsn pg_lsn NOT NULL,
    UNIQUE (sync_subid, sync_nspname, sync_relname)
);

CREATE TABLE IF NOT EXISTS spock.replication_set (
    set_id oid NOT NULL PRIMARY KEY,
    set_nodeid oid NOT NULL REFERENCES spock.node(node_id) ON UPDATE CASCADE,
    set_name name NOT NULL,
    replicate_insert boolean NOT NULL DEFAULT true,
    replicate_update boolean NOT NULL DEFAULT true,
    replicate_delete boolean NOT NULL DEFAULT true,
    replicate_truncate boolean NOT NULL DEFAULT true,
    UNIQUE (set_nodeid, set_name)
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.replication_set_table (
    set_id oid NOT NULL,
    set_reloid regclass NOT NULL,
    set_att_list text[],
    set_row_filter pg_node_tree,
    PRIMARY KEY (set_id, set_reloid)
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.replication_set_seq (
    set_id oid NOT NULL,
    set_seqoid regclass NOT NULL,
    PRIMARY KEY (set_id, set_seqoid)
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.sequence_state (
    seqoid oid NOT NULL PRIMARY KEY,
    cache_size integer NOT NULL,
    last_value bigint NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.depend (
    classid oid NOT NULL,
    objid oid NOT NULL,
    objsubid integer NOT NULL,
    refclassid oid NOT NULL,
    refobjid oid NOT NULL,
    refobjsubid integer NOT NULL,
    deptype "char" NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.queue (
    queued_at timestamptz NOT NULL,
    role name NOT NULL,
    replication_sets text[],
    message_type "char" NOT NULL,
    message json NOT NULL
);

CREATE TABLE IF NOT EXISTS spock.exception_log (
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

CREATE TABLE IF NOT EXISTS spock.exception_status (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    retry_errored_at timestamptz NOT NULL,
    remote_xid bigint NOT NULL,
    status text NOT NULL,
    resolved_at timestamptz,
    resolution_details jsonb,
    PRIMARY KEY (remote_origin, remote_commit_ts, retry_errored_at)
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.exception_status_detail (
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

CREATE TABLE IF NOT EXISTS spock.progress (
    node_id oid NOT NULL,
    remote_node_id oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    remote_lsn pg_lsn NOT NULL,
    remote_insert_lsn pg_lsn NOT NULL,
    last_updated_ts timestamptz NOT NULL,
    updated_by_decode boolean NOT NULL,
    PRIMARY KEY (node_id, remote_node_id)
) WITH (fillfactor = 50);

-- Ours: the commit timestamp up to which each subscription has applied its provider's changes.
-- spock.progress (upstream's) has one row per provider node, shared by every subscription from
-- it; tombstones may go only once the slowest subscription has moved past them.
CREATE TABLE IF NOT EXISTS spock.subscription_progress (
    sub_id oid PRIMARY KEY REFERENCES spock.subscription (sub_id) ON DELETE CASCADE,
    commit_ts timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS spock.pii (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pii_schema text NOT NULL,
    pii_table text NOT NULL,
    pii_column text NOT NULL
) WITH (user_catalog_table = true);

CREATE TABLE IF NOT EXISTS spock.resolutions (
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
);
-- Not a user catalog table (upstream's is): the apply worker writes a row per conflict in the
-- transaction it applies, and a write to a user catalog table makes that transaction one that
-- changes catalogs for logical decoding, so every walsender of the node would build a new
-- historic snapshot (sorting every such transaction since the last running-xacts record) at
-- each conflict. Nothing reads this table while decoding.
ALTER TABLE spock.resolutions RESET (user_catalog_table);

-- What is left of deleted rows of replicated tables: a key per row, whose xmin (the deleting
-- transaction) carries the delete's commit timestamp and origin for last-update-wins.
CREATE TABLE IF NOT EXISTS spock.tombstones (
    relid oid NOT NULL,
    key bytea NOT NULL,
    PRIMARY KEY (relid, key)
);

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
