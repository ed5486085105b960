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
#include "miscadmin.h"
#include "replication/logical.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

/*
 * Level 5 (patch 0005, only on majors whose server has output_plugin_libraries)
 * brings RegisterTrustedOutputPlugin().
 */
#if PGEDGE_KERNEL_API >= 5
#define HAVE_TRUSTED_OUTPUT_PLUGINS 1
#endif

PG_FUNCTION_INFO_V1(pgedge_test_subxid);
PG_FUNCTION_INFO_V1(pgedge_test_set_commit_ts);
PG_FUNCTION_INFO_V1(pgedge_test_commit_clock_floor);
PG_FUNCTION_INFO_V1(pgedge_test_commit_clock);
PG_FUNCTION_INFO_V1(pgedge_test_register_output_plugin);

/*
 * Preloaded by the tests' configuration: trusts test_decoding as an output
 * plugin provided by this library, so the trusted_output_plugin test can use
 * it with an output_plugin_libraries list that omits it.
 */
void
_PG_init(void)
{
#ifdef HAVE_TRUSTED_OUTPUT_PLUGINS
	if (process_shared_preload_libraries_in_progress)
		RegisterTrustedOutputPlugin("test_decoding");
#endif
}

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

/* RegisterTrustedOutputPlugin(name), called outside shared_preload_libraries. */
Datum
pgedge_test_register_output_plugin(PG_FUNCTION_ARGS)
{
#ifdef HAVE_TRUSTED_OUTPUT_PLUGINS
	RegisterTrustedOutputPlugin(text_to_cstring(PG_GETARG_TEXT_PP(0)));
#else
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("this kernel has no trusted output plugins")));
#endif
	PG_RETURN_VOID();
}
