--
-- Capability marker (patch 0001)
--
-- Level 4 on every major (patches 0001-0004); 5 where patch 0005 exists
-- (checked exactly by trusted_output_plugin).
SELECT current_setting('pgedge.kernel_api')::int BETWEEN 4 AND 5 AS known_level;
SELECT current_setting('pgedge.kernel_version') ~ '^[0-9]+\.[0-9]+\.[0-9]+' AS has_version,
       strpos(version(), '(pgEdge ' || current_setting('pgedge.kernel_version') || ')') > 0
         AS version_names_it;
SET pgedge.kernel_version = 'forged';
SHOW track_commit_timestamp;

-- SQL access to the kernel's C functions, for the following tests
CREATE EXTENSION pgedge_kernel_test;
