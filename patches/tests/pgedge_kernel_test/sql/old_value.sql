--
-- Old-value logging (patch 0003)
--
SELECT 'init' FROM pg_create_logical_replication_slot('pgedge_old_value', 'test_decoding');

CREATE TABLE acct (id int PRIMARY KEY, balance bigint, note text);
INSERT INTO acct VALUES (1, 100, 'a');
-- no flagged column: no old key
UPDATE acct SET note = 'b' WHERE id = 1;
ALTER TABLE acct ALTER COLUMN balance
  SET (log_old_value = true, delta_apply_function = spock.delta_apply);
-- the key and the flagged column, also when only another column changed
UPDATE acct SET note = 'c' WHERE id = 1;
UPDATE acct SET balance = 150 WHERE id = 1;
-- DELETE logs the key only
INSERT INTO acct VALUES (2, 200, 'x');
DELETE FROM acct WHERE id = 2;
-- REPLICA IDENTITY NOTHING logs no old values at all
ALTER TABLE acct REPLICA IDENTITY NOTHING;
UPDATE acct SET note = 'd' WHERE id = 1;
-- a table without a key still gets its flagged columns logged
CREATE TABLE nokey (a int, b int);
ALTER TABLE nokey ALTER COLUMN b SET (log_old_value = true);
INSERT INTO nokey VALUES (1, 10);
UPDATE nokey SET a = 2;

SELECT data FROM pg_logical_slot_get_changes('pgedge_old_value', NULL, NULL,
  'include-xids', '0', 'skip-empty-xacts', '1');
SELECT pg_drop_replication_slot('pgedge_old_value');

SELECT attname, attoptions FROM pg_attribute
  WHERE attrelid = 'acct'::regclass AND attnum > 0 ORDER BY attnum;
ALTER TABLE acct ALTER COLUMN note SET (delta_apply_function = 'not a (name');
ALTER TABLE acct SET (log_old_value = true);

-- The flagged columns outlive a relcache rebuild in the middle of an UPDATE:
-- with debug_discard_caches, opening the TOAST table to store the new value
-- rebuilds doc's entry after heap_update() fetched them.
CREATE TABLE doc (id int PRIMARY KEY, n int, body text);
ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE doc ALTER COLUMN n SET (log_old_value = true);
INSERT INTO doc VALUES (1, 1, 'short');
SELECT 'init' FROM pg_create_logical_replication_slot('pgedge_old_value_rebuild', 'test_decoding');
SET debug_discard_caches = 1;
UPDATE doc SET n = 2, body = repeat('y', 3000) WHERE id = 1;
RESET debug_discard_caches;
SELECT replace(data, repeat('y', 3000), '<3000 y>')
  FROM pg_logical_slot_get_changes('pgedge_old_value_rebuild', NULL, NULL,
    'include-xids', '0', 'skip-empty-xacts', '1');
SELECT pg_drop_replication_slot('pgedge_old_value_rebuild');
