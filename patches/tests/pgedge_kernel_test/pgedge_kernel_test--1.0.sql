/* pgedge_kernel_test--1.0.sql */

\echo Use "CREATE EXTENSION pgedge_kernel_test" to load this file. \quit

-- xid of the current (sub)transaction, assigned if need be
CREATE FUNCTION pgedge_test_subxid() RETURNS xid
AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;

-- SubTransactionIdSetCommitTsData(xid, ts, origin) (patch 0004)
CREATE FUNCTION pgedge_test_set_commit_ts(xid, timestamptz, integer) RETURNS void
AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;

-- PgEdgeCommitClockSetFloor(ts) (patch 0002)
CREATE FUNCTION pgedge_test_commit_clock_floor(timestamptz) RETURNS void
AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;

-- PgEdgeCommitClockCurrent() (patch 0002)
CREATE FUNCTION pgedge_test_commit_clock() RETURNS timestamptz
AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;

-- RegisterTrustedOutputPlugin(name) (patch 0005, where the server has
-- output_plugin_libraries)
CREATE FUNCTION pgedge_test_register_output_plugin(text) RETURNS void
AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;
