-- lolor 1.0 (also 1.2.1, which changed no object): the objects of upstream's version 1.0, our own
-- definitions served by the current library. Reached only by CREATE EXTENSION lolor VERSION
-- '1.0' or '1.2.1'; ALTER EXTENSION lolor UPDATE then follows the update steps to the current
-- version. Unlike upstream's 1.0 it already revokes PUBLIC EXECUTE on the server-file functions.
--
-- The schema `lolor` is created by CREATE EXTENSION (control file: schema = lolor).

-- Storage -------------------------------------------------------------------------------------

CREATE TABLE lolor.pg_largeobject_metadata (
    oid oid NOT NULL,
    lomowner oid NOT NULL,
    lomacl aclitem[],
    CONSTRAINT pg_largeobject_metadata_pkey PRIMARY KEY (oid)
);

CREATE TABLE lolor.pg_largeobject (
    loid oid NOT NULL,
    pageno integer NOT NULL,
    data bytea NOT NULL,
    CONSTRAINT pg_largeobject_pkey PRIMARY KEY (loid, pageno)
);

-- Pages are at most BLCKSZ/4 bytes: compress them when that helps but keep them inline, as the
-- native catalog (which has no TOAST table) does. With the default EXTENDED storage an
-- incompressible 2 kB page would go to the TOAST table, doubling the work per page.
ALTER TABLE lolor.pg_largeobject ALTER COLUMN data SET STORAGE MAIN;

-- pg_dump dumps all rows of both tables.
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject', '');
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject_metadata', '');

-- Like the native catalogs: everybody may see which objects exist and who owns them; the pages
-- themselves are only reachable through the lo_* functions (which check the object's ACL).
GRANT USAGE ON SCHEMA lolor TO PUBLIC;
GRANT SELECT ON lolor.pg_largeobject_metadata TO PUBLIC;

-- Take-over of the built-in large-object functions ---------------------------------------------
--
-- Each built-in pg_catalog function is renamed to <name>_orig and a lolor function with the same
-- name and signature takes its place, so unqualified and pg_catalog-qualified calls and the
-- by-name lookups of client libraries (libpq, pgjdbc, ...) reach lolor. lolor.disable() and
-- lolor.enable() swap the names back and forth (lolor's functions are then called lolor_<name>).

ALTER FUNCTION pg_catalog.lo_open(oid, integer) RENAME TO lo_open_orig;
CREATE FUNCTION pg_catalog.lo_open(oid, integer) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_open';

ALTER FUNCTION pg_catalog.lo_close(integer) RENAME TO lo_close_orig;
CREATE FUNCTION pg_catalog.lo_close(integer) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_close';

ALTER FUNCTION pg_catalog.lo_creat(integer) RENAME TO lo_creat_orig;
CREATE FUNCTION pg_catalog.lo_creat(integer) RETURNS oid
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_creat';

ALTER FUNCTION pg_catalog.lo_create(oid) RENAME TO lo_create_orig;
CREATE FUNCTION pg_catalog.lo_create(oid) RETURNS oid
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_create';

ALTER FUNCTION pg_catalog.loread(integer, integer) RENAME TO loread_orig;
CREATE FUNCTION pg_catalog.loread(integer, integer) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_loread';

ALTER FUNCTION pg_catalog.lowrite(integer, bytea) RENAME TO lowrite_orig;
CREATE FUNCTION pg_catalog.lowrite(integer, bytea) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lowrite';

ALTER FUNCTION pg_catalog.lo_export(oid, text) RENAME TO lo_export_orig;
CREATE FUNCTION pg_catalog.lo_export(oid, text) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_export';

ALTER FUNCTION pg_catalog.lo_from_bytea(oid, bytea) RENAME TO lo_from_bytea_orig;
CREATE FUNCTION pg_catalog.lo_from_bytea(oid, bytea) RETURNS oid
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_from_bytea';

ALTER FUNCTION pg_catalog.lo_get(oid) RENAME TO lo_get_orig;
CREATE FUNCTION pg_catalog.lo_get(oid) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_get';

ALTER FUNCTION pg_catalog.lo_get(oid, bigint, integer) RENAME TO lo_get_orig;
CREATE FUNCTION pg_catalog.lo_get(oid, bigint, integer) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_get_fragment';

ALTER FUNCTION pg_catalog.lo_import(text) RENAME TO lo_import_orig;
CREATE FUNCTION pg_catalog.lo_import(text) RETURNS oid
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_import';

ALTER FUNCTION pg_catalog.lo_import(text, oid) RENAME TO lo_import_orig;
CREATE FUNCTION pg_catalog.lo_import(text, oid) RETURNS oid
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_import_with_oid';

ALTER FUNCTION pg_catalog.lo_lseek(integer, integer, integer) RENAME TO lo_lseek_orig;
CREATE FUNCTION pg_catalog.lo_lseek(integer, integer, integer) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_lseek';

ALTER FUNCTION pg_catalog.lo_lseek64(integer, bigint, integer) RENAME TO lo_lseek64_orig;
CREATE FUNCTION pg_catalog.lo_lseek64(integer, bigint, integer) RETURNS bigint
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_lseek64';

ALTER FUNCTION pg_catalog.lo_put(oid, bigint, bytea) RENAME TO lo_put_orig;
CREATE FUNCTION pg_catalog.lo_put(oid, bigint, bytea) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_put';

ALTER FUNCTION pg_catalog.lo_tell(integer) RENAME TO lo_tell_orig;
CREATE FUNCTION pg_catalog.lo_tell(integer) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_tell';

ALTER FUNCTION pg_catalog.lo_tell64(integer) RENAME TO lo_tell64_orig;
CREATE FUNCTION pg_catalog.lo_tell64(integer) RETURNS bigint
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_tell64';

ALTER FUNCTION pg_catalog.lo_truncate(integer, integer) RENAME TO lo_truncate_orig;
CREATE FUNCTION pg_catalog.lo_truncate(integer, integer) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_truncate';

ALTER FUNCTION pg_catalog.lo_truncate64(integer, bigint) RENAME TO lo_truncate64_orig;
CREATE FUNCTION pg_catalog.lo_truncate64(integer, bigint) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_truncate64';

ALTER FUNCTION pg_catalog.lo_unlink(oid) RENAME TO lo_unlink_orig;
CREATE FUNCTION pg_catalog.lo_unlink(oid) RETURNS integer
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'lolor_lo_unlink';

-- Server-file access: core revokes EXECUTE on its lo_import/lo_export from PUBLIC; a new function
-- would get PUBLIC EXECUTE by default, so revoke it here too. (The library also checks for
-- superuser / pg_read_server_files / pg_write_server_files itself.) Renames keep the ACL.
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text, oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_export(oid, text) FROM PUBLIC;

-- DROP EXTENSION ---------------------------------------------------------------------------------
--
-- Before DROP EXTENSION lolor the trigger refuses while lolor still stores large objects, and
-- otherwise gives the built-in functions their names back. ENABLE ALWAYS: also under
-- session_replication_role = replica (e.g. inside a replication apply).

CREATE FUNCTION pg_catalog.lo_on_drop_extension() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'lolor_on_drop_extension';

CREATE EVENT TRIGGER lo_on_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION pg_catalog.lo_on_drop_extension();
ALTER EVENT TRIGGER lo_on_drop_extension ENABLE ALWAYS;
