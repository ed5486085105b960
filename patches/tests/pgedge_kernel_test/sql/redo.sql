--
-- Crash recovery replays the kernel's commit data (patches 0002 and 0004):
-- commits after the last checkpoint, an immediate shutdown, a restart.
--
CREATE TABLE redo_probe (id int PRIMARY KEY);
BEGIN;
INSERT INTO redo_probe VALUES (1);
SAVEPOINT s;
INSERT INTO redo_probe VALUES (2);
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2010-01-01 00:00:00+00', 21);
RELEASE s;
SAVEPOINT t;
INSERT INTO redo_probe VALUES (3);
SELECT pgedge_test_subxid() AS aborted_xid \gset
SELECT pgedge_test_set_commit_ts(:'aborted_xid', '2011-01-01 00:00:00+00', 22);
ROLLBACK TO t;
COMMIT;
BEGIN;
INSERT INTO redo_probe VALUES (4);
PREPARE TRANSACTION 'redo';
COMMIT PREPARED 'redo';
INSERT INTO redo_probe VALUES (5);

-- What the server recorded, for comparison after the crash.
CREATE TABLE redo_before AS
  SELECT 'redo_probe ' || p.id AS what, p.xmin AS x, o.timestamp, o.roident
    FROM redo_probe p, pg_xact_commit_timestamp_origin(p.xmin) o
  UNION ALL
  SELECT 'subxact_probe ' || p.id, p.xmin, o.timestamp, o.roident
    FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o;
SELECT pgedge_test_commit_clock() AS clock_before,
       pg_postmaster_start_time() AS started_before,
       current_setting('data_directory') AS datadir \gset

-- Crash and restart.
\setenv PGDATA :datadir
\! pg_ctl restart -m immediate -w -l "$PG_ABS_BUILDDIR/log/postmaster.log" >/dev/null 2>&1
\c
SELECT pg_postmaster_start_time() > :'started_before' AS restarted;

SELECT b.what, o.timestamp = b.timestamp AS same_timestamp,
       o.roident = b.roident AS same_origin, o.roident
  FROM redo_before b, pg_xact_commit_timestamp_origin(b.x) o
  ORDER BY b.what COLLATE "C";
SELECT pg_xact_commit_timestamp(:'aborted_xid') IS NULL AS aborted_dropped;

-- The commit clock survived the crash.
SELECT pgedge_test_commit_clock() >= :'clock_before' AS clock_kept;
INSERT INTO redo_probe VALUES (6);
SELECT pg_xact_commit_timestamp(xmin) > :'clock_before' AS stamped_after
  FROM redo_probe WHERE id = 6;
