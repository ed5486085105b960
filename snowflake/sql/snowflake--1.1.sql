-- snowflake 1.1: the objects of upstream's version 1.1 (our own definitions, served by the current
-- library). Reached only by CREATE EXTENSION snowflake VERSION '1.1'; ALTER EXTENSION snowflake
-- UPDATE then follows the update steps to the current version.
--
-- Ids follow the current layout (msec << 22 | node << 12 | count): upstream 1.1 put the node in
-- the low bits, but there is one library for all versions and it never re-encodes ids.

GRANT USAGE ON SCHEMA snowflake TO public;

-- Default sequence of nextval/currval.
CREATE SEQUENCE snowflake.id_seq;
GRANT USAGE ON SEQUENCE snowflake.id_seq TO public;

-- Deliberately not STRICT (as upstream); a NULL argument gives NULL. The C symbols are
-- upstream's, so databases created with upstream snowflake load our library unchanged.
CREATE FUNCTION snowflake.nextval(regclass DEFAULT 'snowflake.id_seq'::regclass)
RETURNS int8 LANGUAGE c AS 'MODULE_PATHNAME', 'snowflake_nextval';

CREATE FUNCTION snowflake.currval(regclass DEFAULT 'snowflake.id_seq'::regclass)
RETURNS int8 LANGUAGE c AS 'MODULE_PATHNAME', 'snowflake_currval';

CREATE FUNCTION snowflake.get_epoch(int8)
RETURNS numeric LANGUAGE c AS 'MODULE_PATHNAME', 'snowflake_get_epoch';

CREATE FUNCTION snowflake.get_count(int8)
RETURNS int4 LANGUAGE c AS 'MODULE_PATHNAME', 'snowflake_get_count';

CREATE FUNCTION snowflake.get_node(int8)
RETURNS int4 LANGUAGE c AS 'MODULE_PATHNAME', 'snowflake_get_node';

CREATE FUNCTION snowflake.format(int8)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'id', snowflake.get_node($1),
        'ts', to_timestamp(snowflake.get_epoch($1))::text,
        'count', snowflake.get_count($1))
$$;
