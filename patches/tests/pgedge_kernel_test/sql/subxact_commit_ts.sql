--
-- Per-subtransaction commit-timestamp overrides (patch 0004)
--
CREATE TABLE subxact_probe (id int PRIMARY KEY, note text);

-- Overrides set in subtransactions, one of them aborted with its child.
BEGIN;
INSERT INTO subxact_probe VALUES (1, 'top');
SAVEPOINT merged;
INSERT INTO subxact_probe VALUES (2, 'merged');
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2001-02-03 04:05:06.789012+00', 7);
RELEASE merged;
SAVEPOINT outer_sp;
INSERT INTO subxact_probe VALUES (3, 'aborted');
SELECT pgedge_test_subxid() AS outer_xid \gset
SAVEPOINT inner_sp;
INSERT INTO subxact_probe VALUES (4, 'aborted child');
SELECT pgedge_test_subxid() AS inner_xid \gset
SELECT pgedge_test_set_commit_ts(:'inner_xid', '2002-01-01 00:00:00+00', 8);
RELEASE inner_sp;
SELECT pgedge_test_set_commit_ts(:'outer_xid', '2003-01-01 00:00:00+00', 9);
ROLLBACK TO outer_sp;
SAVEPOINT twice;
INSERT INTO subxact_probe VALUES (5, 'set twice');
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2004-01-01 00:00:00+00', 10);
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2004-06-01 00:00:00+00', 11);
RELEASE twice;
COMMIT;

-- Rows written in a subtransaction carry its override; the top-level
-- transaction keeps its own timestamp and no origin.
SELECT p.id, p.note, o.timestamp, o.roident
  FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o
  WHERE p.id <> 1 ORDER BY p.id;
SELECT o.timestamp > '2020-01-01' AS top_keeps_its_own, o.roident
  FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o WHERE p.id = 1;
-- the aborted subtransactions' overrides were dropped
SELECT pg_xact_commit_timestamp(:'outer_xid') IS NULL AS outer_dropped,
       pg_xact_commit_timestamp(:'inner_xid') IS NULL AS inner_dropped;

-- An internal subtransaction (a PL/pgSQL block with an exception handler),
-- as spock's delta apply uses, in an implicit transaction.
DO $$
BEGIN
  BEGIN
    INSERT INTO subxact_probe VALUES (6, 'block');
    PERFORM pgedge_test_set_commit_ts(pgedge_test_subxid(), '2005-01-01 00:00:00+00', 12);
  EXCEPTION WHEN others THEN
    RAISE;
  END;
END $$;
SELECT o.timestamp, o.roident
  FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o WHERE p.id = 6;

-- Many overrides, every third one dropped with its subtransaction.
CREATE TABLE subxact_many (id int);
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    BEGIN
      INSERT INTO subxact_many VALUES (i);
      PERFORM pgedge_test_set_commit_ts(pgedge_test_subxid(),
        '2006-01-01 00:00:00+00'::timestamptz + i * interval '1 s', i);
      IF i % 3 = 0 THEN
        RAISE EXCEPTION 'dropped';
      END IF;
    EXCEPTION WHEN raise_exception THEN
      NULL;
    END;
  END LOOP;
END $$;
SELECT count(*),
       bool_and(o.timestamp = '2006-01-01 00:00:00+00'::timestamptz + m.id * interval '1 s'
                AND o.roident = m.id) AS all_overridden
  FROM subxact_many m, pg_xact_commit_timestamp_origin(m.xmin) o;

-- The override of the top-level transaction itself.
BEGIN;
INSERT INTO subxact_probe VALUES (7, 'top-level override');
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2007-01-01 00:00:00+00', 13);
COMMIT;
SELECT o.timestamp, o.roident
  FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o WHERE p.id = 7;

-- Refused: an xid outside the current transaction, a zero timestamp.
SELECT pgedge_test_set_commit_ts('3', now(), 1);
BEGIN;
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2000-01-01 00:00:00+00', 1);
ROLLBACK;

-- PREPARE TRANSACTION is refused while an override is set ...
BEGIN;
INSERT INTO subxact_probe VALUES (10, 'prepared');
SAVEPOINT s;
INSERT INTO subxact_probe VALUES (11, 'prepared sub');
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2008-01-01 00:00:00+00', 14);
RELEASE s;
PREPARE TRANSACTION 'pgedge_override';
SELECT count(*) FROM pg_prepared_xacts;
SELECT count(*) FROM subxact_probe WHERE id >= 10;
-- ... but not once it went with its aborted subtransaction.
BEGIN;
INSERT INTO subxact_probe VALUES (10, 'prepared');
SAVEPOINT s;
INSERT INTO subxact_probe VALUES (11, 'prepared sub');
SELECT pgedge_test_set_commit_ts(pgedge_test_subxid(), '2008-01-01 00:00:00+00', 14);
ROLLBACK TO s;
PREPARE TRANSACTION 'pgedge_no_override';
COMMIT PREPARED 'pgedge_no_override';
SELECT id, note, o.timestamp > '2020-01-01' AS own_timestamp, o.roident
  FROM subxact_probe p, pg_xact_commit_timestamp_origin(p.xmin) o
  WHERE p.id >= 10 ORDER BY p.id;
