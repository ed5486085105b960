/*-------------------------------------------------------------------------
 *
 * pgedge_kernel_test.c
 *		SQL access to the pgEdge kernel's C-only APIs, for the regression
 *		tests of the kernel patches.  Not installed with the kernel.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/xact.h"
#include "fmgr.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(pgedge_test_subxid);
PG_FUNCTION_INFO_V1(pgedge_test_set_commit_ts);
PG_FUNCTION_INFO_V1(pgedge_test_commit_clock_floor);
PG_FUNCTION_INFO_V1(pgedge_test_commit_clock);

/* The xid of the current (sub)transaction, assigned if need be. */
Datum
pgedge_test_subxid(PG_FUNCTION_ARGS)
{
	PG_RETURN_TRANSACTIONID(GetCurrentTransactionId());
}

/* Gives (sub)transaction xid a commit timestamp and origin of its own. */
Datum
pgedge_test_set_commit_ts(PG_FUNCTION_ARGS)
{
	TransactionId xid = PG_GETARG_TRANSACTIONID(0);
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(1);
	int32		origin = PG_GETARG_INT32(2);

	if (origin < 0 || origin > PG_UINT16_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("origin %d out of range", origin)));
	SubTransactionIdSetCommitTsData(xid, ts, (RepOriginId) origin);
	PG_RETURN_VOID();
}

/* Marks the current transaction as applying a remote commit made at ts. */
Datum
pgedge_test_commit_clock_floor(PG_FUNCTION_ARGS)
{
	PgEdgeCommitClockSetFloor(PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_VOID();
}

/* The latest commit timestamp handed out. */
Datum
pgedge_test_commit_clock(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(PgEdgeCommitClockCurrent());
}
