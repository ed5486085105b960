--
-- Monotonic commit clock (patch 0002)
--
CREATE TABLE clock_probe (note text PRIMARY KEY);
CREATE FUNCTION commit_ts_of(text) RETURNS timestamptz LANGUAGE sql
  AS $$ SELECT pg_xact_commit_timestamp(xmin) FROM clock_probe WHERE note = $1 $$;

-- A wall clock an hour late: still stamped after the previous commit.
INSERT INTO clock_probe VALUES ('first');
SET pgedge.commit_clock_test_offset = '-1h';
INSERT INTO clock_probe VALUES ('late');
RESET pgedge.commit_clock_test_offset;
SELECT commit_ts_of('late') > commit_ts_of('first') AS late_follows,
       commit_ts_of('late') < commit_ts_of('first') + '1 min' AS late_not_behind,
       pgedge_test_commit_clock() >= commit_ts_of('late') AS clock_at_least_late;

-- Applying a remote transaction (a floor within the allowed skew): that
-- commit keeps its own timestamp, the clock moves up to the floor, and later
-- local commits are stamped after it.
SELECT clock_timestamp() + '30 s' AS floor \gset
BEGIN;
SELECT pgedge_test_commit_clock_floor(:'floor');
INSERT INTO clock_probe VALUES ('applied');
COMMIT;
INSERT INTO clock_probe VALUES ('after applied');
SELECT commit_ts_of('applied') < :'floor' AS applied_keeps_its_own,
       commit_ts_of('after applied') > :'floor' AS local_follows_floor;

-- A floor further ahead than pgedge.commit_clock_max_skew is refused.
SHOW pgedge.commit_clock_max_skew;
DO $$
BEGIN
  PERFORM pgedge_test_commit_clock_floor(clock_timestamp() + '2 h');
  RAISE NOTICE 'accepted';
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  RAISE NOTICE 'refused: %', SQLERRM ~ '^remote commit timestamp .* is [0-9]+ ms ahead of the local clock$';
END $$;

-- COMMIT PREPARED is stamped by the clock too.
BEGIN;
INSERT INTO clock_probe VALUES ('prepared');
PREPARE TRANSACTION 'clock';
COMMIT PREPARED 'clock';
SELECT commit_ts_of('prepared') > commit_ts_of('after applied') AS prepared_follows;

-- A wall clock an hour ahead pushes the clock; later commits follow it.
SET pgedge.commit_clock_test_offset = '1h';
INSERT INTO clock_probe VALUES ('ahead');
RESET pgedge.commit_clock_test_offset;
INSERT INTO clock_probe VALUES ('after ahead');
SELECT commit_ts_of('ahead') > now() + '59 min' AS ahead_is_ahead,
       commit_ts_of('after ahead') > commit_ts_of('ahead') AS later_follows,
       pgedge_test_commit_clock() >= commit_ts_of('after ahead') AS clock_current;

-- Only superusers may shift the clock.
CREATE ROLE regress_pgedge_plain;
SET ROLE regress_pgedge_plain;
SET pgedge.commit_clock_test_offset = '1h';
RESET ROLE;
DROP ROLE regress_pgedge_plain;
