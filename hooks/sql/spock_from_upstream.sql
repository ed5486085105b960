-- Turns upstream's spock 5.0.4 or 5.0.5 objects (functions declared against upstream's C
-- symbols) into this build's. Upstream's views, aggregate, functions and procedures make way; the
-- catalog tables stay, rows and all (this build's install script creates only those missing);
-- the install script of this build, spliced in by `cargo xtask` where it says so below, creates
-- everything else; tables already in replication sets then get what membership means here.
-- Used by spock--5.0.4--5.0.5.sql.in and spock--5.0.5--5.0.5-1.sql.in.

DROP VIEW spock.channel_summary_stats, spock.channel_table_stats, spock.lag_tracker, spock.tables;
DROP AGGREGATE spock.md5_agg(ORDER BY anyelement);

DO $$
DECLARE
    v_routine regprocedure;
BEGIN
    FOR v_routine IN
        SELECT p.oid::pg_catalog.regprocedure
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'spock')
           AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('DROP ROUTINE %s', v_routine);
    END LOOP;
END $$;

-- @install_script

SELECT spock.track_deletes(m.set_reloid)
  FROM (SELECT DISTINCT r.set_reloid
          FROM spock.replication_set_table r
          JOIN spock.replication_set s ON s.set_id = r.set_id
         WHERE s.replicate_delete) m;
