-- lolor 1.0 -> 1.2.1: no SQL object added or dropped (upstream's step is empty).
--
-- Databases created by upstream's 1.0 may lack these; all are idempotent.
--
-- Upstream's lo_import/lo_export were executable by PUBLIC: anybody could read and write server
-- files. Core revokes EXECUTE on its own versions; so do we.
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text, oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_export(oid, text) FROM PUBLIC;
-- The original 1.0 release did not mark the tables for pg_dump.
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject', '');
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject_metadata', '');
