-- snowflake 1.0 -> 1.1.
--
-- Since 1.1 snowflake.format() names the node field "id" (1.0 said "node"). Upstream's step left
-- the 1.0 function in place, so upgraded databases answered differently from fresh ones; we
-- replace it, so that every installation gives the same JSON.

CREATE OR REPLACE FUNCTION snowflake.format(int8)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'id', snowflake.get_node($1),
        'ts', to_timestamp(snowflake.get_epoch($1))::text,
        'count', snowflake.get_count($1))
$$;
