-- snowflake 2.3: the objects of upstream's version 2.3 (our own definitions, served by the current
-- library). Reached only by CREATE EXTENSION snowflake VERSION '2.3'; ALTER EXTENSION snowflake
-- UPDATE then follows the update steps to the current version.
--
-- The conversion functions behave as in our 2.4 (plain, serial and identity sequences; the
-- sequence ends AS bigint with the full MAXVALUE). Upstream's bodies changed from version to
-- version (2.3 refused plain sequences); only their names and signatures are kept here.

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

-- Widens a column to int8, and every foreign-key column that references it (transitively);
-- returns the number of columns whose type changed. (Version 2.4 splits this into a recursive
-- helper; these older versions have no room for one in their object list, so a recursive query
-- finds the columns. Its path column stops at reference cycles.)
CREATE FUNCTION snowflake.convert_column_to_int8(p_rel regclass, p_attnum smallint)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_col record;
    v_cmd text;
    v_changes integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = p_rel AND attnum = p_attnum AND NOT attisdropped) THEN
        RAISE EXCEPTION 'Attribute % of relation % not found', p_attnum, p_rel;
    END IF;
    FOR v_col IN
        WITH RECURSIVE cols(rel, att, depth, path) AS (
            SELECT p_rel::oid, p_attnum, 0, ARRAY[p_rel::oid || ':' || p_attnum]
            UNION ALL
            SELECT fk.rel, fk.att, c.depth + 1, c.path || (fk.rel || ':' || fk.att)
              FROM cols c
              CROSS JOIN LATERAL (
                  SELECT con.conrelid AS rel, con.conkey[array_position(con.confkey, c.att)] AS att
                    FROM pg_constraint con
                   WHERE con.contype = 'f' AND con.confrelid = c.rel AND c.att = ANY (con.confkey)
              ) fk
             WHERE NOT (fk.rel || ':' || fk.att) = ANY (c.path)
        )
        SELECT * FROM (
            SELECT DISTINCT ON (cols.rel, cols.att)
                   cols.rel, cols.depth, n.nspname, r.relname, a.attname, a.atttypid
              FROM cols
              JOIN pg_attribute a ON a.attrelid = cols.rel AND a.attnum = cols.att
              JOIN pg_class r ON r.oid = cols.rel
              JOIN pg_namespace n ON n.oid = r.relnamespace
             ORDER BY cols.rel, cols.att, cols.depth
        ) found
        ORDER BY found.depth, found.rel
    LOOP
        IF v_col.atttypid NOT IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) THEN
            RAISE EXCEPTION 'column "%" of relation % is of type %, not an integer type',
                v_col.attname, v_col.rel::regclass, format_type(v_col.atttypid, NULL);
        END IF;
        IF v_col.atttypid <> 'int8'::regtype THEN
            v_cmd := format('ALTER TABLE %I.%I ALTER COLUMN %I SET DATA TYPE int8',
                            v_col.nspname, v_col.relname, v_col.attname);
            RAISE NOTICE 'EXECUTE %', v_cmd;
            EXECUTE v_cmd;
            v_changes := v_changes + 1;
        END IF;
    END LOOP;
    RETURN v_changes;
END;
$$;

-- Makes a sequence issue snowflake ids: the columns using it get int8 and a
-- snowflake.nextval default; identity columns become ordinary columns with an owned sequence
-- of the same name. Unlike upstream 2.4 the sequence ends up AS bigint with the full int8
-- MAXVALUE, so pg_dump output restores. Idempotent; returns the number of type changes plus,
-- for plain sequences, the number of defaults rewritten.
CREATE FUNCTION snowflake.convert_sequence_to_snowflake(p_seqid regclass)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v_dep record;
    v_seq text;
    v_rel regclass;
    v_col name;
    v_relname text;
    v_identity "char";
    v_default text;
    v_last bigint;
    v_called boolean;
    v_cmd text;
    v_changes integer := 0;
    v_use record;
BEGIN
    SELECT d.deptype, d.refobjid, d.refobjsubid INTO v_dep
      FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
     WHERE d.classid = 'pg_class'::regclass AND d.objid = p_seqid
       AND d.deptype IN ('a', 'i', 'n')
     ORDER BY d.deptype
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Input value "%" is not a valid convertable sequence', p_seqid;
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO v_seq
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_seqid;

    IF v_dep.deptype IN ('a', 'i') THEN
        v_rel := v_dep.refobjid::regclass;
        SELECT a.attname, a.attidentity, pg_get_expr(ad.adbin, ad.adrelid),
               format('%I.%I', n.nspname, c.relname)
          INTO v_col, v_identity, v_default, v_relname
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
         WHERE a.attrelid = v_rel AND a.attnum = v_dep.refobjsubid;

        IF v_identity IN ('a', 'd') THEN
            -- Replace the identity by an owned sequence of the same name that keeps its position.
            EXECUTE format('SELECT last_value, is_called FROM %s', v_seq) INTO v_last, v_called;
            v_cmd := format('ALTER TABLE %s ALTER COLUMN %I DROP IDENTITY', v_relname, v_col);
            RAISE NOTICE 'EXECUTE %', v_cmd;
            EXECUTE v_cmd;
            v_cmd := format('CREATE SEQUENCE %s AS bigint OWNED BY %s.%I', v_seq, v_relname, v_col);
            RAISE NOTICE 'EXECUTE %', v_cmd;
            EXECUTE v_cmd;
            PERFORM setval(v_seq::regclass, v_last, v_called);
            p_seqid := v_seq::regclass;
        ELSIF v_default IS NULL
           OR v_default NOT IN (format('nextval(%L::regclass)', v_seq),
                                format('nextval(%L::regclass)', p_seqid::text),
                                format('snowflake.nextval(%L::regclass)', v_seq),
                                format('snowflake.nextval(%L::regclass)', p_seqid::text)) THEN
            RAISE EXCEPTION 'definition of DEFAULT value for column "%" of relation "%" does not correspond serial or bigserial type: "%"',
                v_col, v_rel, coalesce(v_default, '<NULL>');
        END IF;

        v_changes := snowflake.convert_column_to_int8(v_rel, v_dep.refobjsubid::smallint);
        IF v_default IS DISTINCT FROM format('snowflake.nextval(%L::regclass)', v_seq) THEN
            v_cmd := format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT snowflake.nextval(%L::regclass)',
                            v_relname, v_col, v_seq);
            RAISE NOTICE 'EXECUTE %', v_cmd;
            EXECUTE v_cmd;
        END IF;
    ELSE
        -- A plain sequence: rewrite every column default that calls core nextval on it.
        FOR v_use IN
            SELECT ad.adrelid, ad.adnum, a.attname, format('%I.%I', n.nspname, c.relname) AS relname
              FROM pg_attrdef ad
              JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
              JOIN pg_class c ON c.oid = ad.adrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE pg_get_expr(ad.adbin, ad.adrelid) IN (format('nextval(%L::regclass)', v_seq),
                                                         format('nextval(%L::regclass)', p_seqid::text))
             ORDER BY ad.adrelid, ad.adnum
        LOOP
            v_changes := v_changes
                + snowflake.convert_column_to_int8(v_use.adrelid::regclass, v_use.adnum::smallint) + 1;
            v_cmd := format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT snowflake.nextval(%L::regclass)',
                            v_use.relname, v_use.attname, v_seq);
            RAISE NOTICE 'EXECUTE %', v_cmd;
            EXECUTE v_cmd;
        END LOOP;
    END IF;

    v_cmd := format('ALTER SEQUENCE %s AS bigint NO CYCLE MAXVALUE 9223372036854775807', v_seq);
    RAISE NOTICE '%', v_cmd;
    EXECUTE v_cmd;
    PERFORM snowflake.nextval(p_seqid);
    RETURN v_changes;
END;
$$;
