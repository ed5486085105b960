-- lolor 1.2.1 -> 1.2.2: adds lolor.enable(), lolor.disable() and lolor.is_enabled() (and the
-- helpers and the DROP OWNED / DROP SCHEMA trigger of our implementation), and turns the 1.2.1
-- objects, ours or upstream's, into exactly what a fresh CREATE EXTENSION lolor creates.

-- Databases created by upstream's 1.0 or 1.2.1 may lack these; all are idempotent.
--
-- Upstream's lo_import/lo_export were executable by PUBLIC: anybody could read and write server
-- files. Core revokes EXECUTE on its own versions; so do we.
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_import(text, oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_export(oid, text) FROM PUBLIC;
-- The original 1.0 release did not mark the tables for pg_dump.
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject', '');
SELECT pg_catalog.pg_extension_config_dump('lolor.pg_largeobject_metadata', '');

-- Our storage and privileges (upstream had neither): pages stay inline; everybody may see which
-- objects exist and who owns them, as with the native catalogs.
ALTER TABLE lolor.pg_largeobject ALTER COLUMN data SET STORAGE MAIN;
GRANT USAGE ON SCHEMA lolor TO PUBLIC;
GRANT SELECT ON lolor.pg_largeobject_metadata TO PUBLIC;

-- Server major of the library (the fresh install gets it from the library's SQL entities).
CREATE FUNCTION lolor.build_pg_major() RETURNS integer
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'build_pg_major_wrapper';

-- Enable / disable -----------------------------------------------------------------------------

-- The 20 signatures lolor takes over (name, argument types).
CREATE FUNCTION lolor.takeover_signatures(OUT name name, OUT args text)
    RETURNS SETOF record LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog
AS $$
    VALUES ('lo_open', 'oid, integer'),
           ('lo_close', 'integer'),
           ('lo_creat', 'integer'),
           ('lo_create', 'oid'),
           ('loread', 'integer, integer'),
           ('lowrite', 'integer, bytea'),
           ('lo_export', 'oid, text'),
           ('lo_from_bytea', 'oid, bytea'),
           ('lo_get', 'oid'),
           ('lo_get', 'oid, bigint, integer'),
           ('lo_import', 'text'),
           ('lo_import', 'text, oid'),
           ('lo_lseek', 'integer, integer, integer'),
           ('lo_lseek64', 'integer, bigint, integer'),
           ('lo_put', 'oid, bigint, bytea'),
           ('lo_tell', 'integer'),
           ('lo_tell64', 'integer'),
           ('lo_truncate', 'integer, integer'),
           ('lo_truncate64', 'integer, bigint'),
           ('lo_unlink', 'oid')
$$;

-- Whether a function of this name exists in pg_catalog (unlike upstream, other schemas don't count).
CREATE FUNCTION lolor.catalog_function_exists(fname name) RETURNS boolean
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc
                   WHERE proname = fname AND pronamespace = 'pg_catalog'::regnamespace)
$$;

CREATE FUNCTION lolor.is_enabled() RETURNS boolean
    LANGUAGE plpgsql STRICT STABLE
    SET search_path = pg_catalog
AS $$
DECLARE
    disabled boolean := lolor.catalog_function_exists('lolor_lo_open');
    enabled boolean := lolor.catalog_function_exists('lo_open_orig');
BEGIN
    IF disabled = enabled THEN
        RAISE EXCEPTION 'lolor is in inconsistent state';
    END IF;
    RETURN NOT disabled;
END
$$;

CREATE FUNCTION lolor.disable() RETURNS boolean
    LANGUAGE plpgsql STRICT VOLATILE
    SET search_path = pg_catalog
AS $$
DECLARE
    sig record;
BEGIN
    IF NOT lolor.catalog_function_exists('lo_close_orig') THEN
        RAISE NOTICE 'lolor still not enabled';
        RETURN false;
    END IF;
    IF lolor.catalog_function_exists('lolor_lo_open') THEN
        RAISE NOTICE 'lolor.disable() has been called before';
        RETURN false;
    END IF;
    FOR sig IN SELECT * FROM lolor.takeover_signatures() LOOP
        EXECUTE format('ALTER FUNCTION pg_catalog.%I(%s) RENAME TO %I',
                       sig.name, sig.args, 'lolor_' || sig.name);
        EXECUTE format('ALTER FUNCTION pg_catalog.%I(%s) RENAME TO %I',
                       sig.name || '_orig', sig.args, sig.name);
    END LOOP;
    RETURN true;
END
$$;

CREATE FUNCTION lolor.enable() RETURNS boolean
    LANGUAGE plpgsql STRICT VOLATILE
    SET search_path = pg_catalog
AS $$
DECLARE
    sig record;
BEGIN
    IF NOT lolor.catalog_function_exists('lolor_lo_close') THEN
        RAISE NOTICE 'lolor still not disabled';
        RETURN false;
    END IF;
    IF lolor.catalog_function_exists('lo_open_orig') THEN
        RAISE NOTICE 'lolor.enable() has been called before';
        RETURN false;
    END IF;
    FOR sig IN SELECT * FROM lolor.takeover_signatures() LOOP
        EXECUTE format('ALTER FUNCTION pg_catalog.%I(%s) RENAME TO %I',
                       sig.name, sig.args, sig.name || '_orig');
        EXECUTE format('ALTER FUNCTION pg_catalog.%I(%s) RENAME TO %I',
                       'lolor_' || sig.name, sig.args, sig.name);
    END LOOP;
    RETURN true;
END
$$;

-- DROP SCHEMA / DROP OWNED: DROP OWNED unlinks the lolor large objects the roles own, as core
-- does for native ones; DROP SCHEMA lolor ... CASCADE is handled like DROP EXTENSION.
CREATE EVENT TRIGGER lolor_on_drop_owned ON ddl_command_start
    WHEN TAG IN ('DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION pg_catalog.lo_on_drop_extension();
ALTER EVENT TRIGGER lolor_on_drop_owned ENABLE ALWAYS;
