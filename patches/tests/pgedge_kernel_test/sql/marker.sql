--
-- Capability marker (patch 0001)
--
SHOW pgedge.kernel_api;
SELECT current_setting('pgedge.kernel_version') ~ '^[0-9]+\.[0-9]+\.[0-9]+' AS has_version,
       strpos(version(), '(pgEdge ' || current_setting('pgedge.kernel_version') || ')') > 0
         AS version_names_it;
SET pgedge.kernel_version = 'forged';
SHOW track_commit_timestamp;

-- SQL access to the kernel's C functions, for the following tests
CREATE EXTENSION pgedge_kernel_test;
