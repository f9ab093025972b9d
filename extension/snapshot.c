/*-------------------------------------------------------------------------
 * snapshot.c
 *		One cut across nodes: the C half of shoal's consistent snapshots.
 *
 * PostgreSQL has no commit sequence numbers, so shoal keeps reads and
 * distributed commits apart with a gate on every node: a lock that a
 * distributed transaction holds in "write" mode on each node it commits on,
 * from before its decision until its commit there, and that a reader holds
 * in "read" mode on every node it reads, all at once, while it takes its
 * snapshots there.  No transaction can then be committed on one of those
 * snapshots and not on another (shoal.transactions.snapshots has the whole
 * argument).  Writers may wait for the gate while holding others; readers
 * never do (they try, and start over), so gates cannot deadlock.
 *
 * The reader's snapshot here is the statement's own, taken by PostgreSQL
 * before any hook runs: once the gate is held, it is refreshed in place.
 * To know which nodes a statement reads (a SELECT, or a write's other
 * tables), its foreign scans are deferred while the executor starts (so
 * that initial pruning has happened); the cut is taken if two nodes or
 * more are read, or one other node more than once (two scans of it, or a
 * scan that runs again: in a nested loop's inner side or a subplan), or if
 * it calls STABLE functions that read, and then the scans start.  The first statement of a
 * REPEATABLE READ transaction takes one whatever it reads, utility
 * statements included.  SERIALIZABLE transactions take none: they never
 * reach other nodes (shoal.fdw.transport refuses).
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/transam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "catalog/partition.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "commands/extension.h"
#include "optimizer/planner.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

int			shoal_current_cut = 0;
bool		shoal_consistent_snapshots = true;

static ExecutorStart_hook_type prev_executor_start = NULL;
static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorEnd_hook_type prev_executor_end = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static planner_hook_type prev_planner = NULL;

/*
 * Statements run by other statements (functions, DO, planning-time calls)
 * are nested.  A nested statement that runs on the snapshot of a statement
 * running around it (in a STABLE function, say) shares that snapshot, which
 * must not change under its caller: it takes no cut.  One with a snapshot of
 * its own (in a VOLATILE function or a DO block, in READ COMMITTED) is a
 * statement like a client's.  Statements run while planning, and shoal's
 * own while it takes a cut, take none.
 */
static int	nesting = 0;
static int	no_cuts = 0;
static List *running_snapshots = NIL;	/* of the statements in ExecutorRun */

/* scans deferred while the executor of a candidate statement starts */
static bool deferring = false;

/*
 * The statement whose executor is starting with its scans deferred: the
 * scans, and the cut taken for it while it starts, when initial pruning
 * called a function that reads (cut_taken).
 */
typedef struct Starting
{
	QueryDesc  *qd;
	bool		whole_transaction;	/* it takes its REPEATABLE READ transaction's cut */
	List	   *scans;			/* ForeignScanState */
	List	   *reads;			/* those that only read (not a write's target) */
	List	   *servers;		/* the servers' OIDs of those, distinct */
	bool		cut_taken;
	int			cut;
} Starting;

static Starting starting;

/* statements holding a cut: QueryDesc and cut id, in pairs */
static List *cut_queries = NIL;
static List *cut_ids = NIL;

/* the transaction whose REPEATABLE READ snapshot was taken as a cut (or declined) */
static LocalTransactionId rr_decided_lxid = InvalidLocalTransactionId;

/* ---------------------------------------------------------------------
 * The gate
 * ---------------------------------------------------------------------
 */
static void
gate_tag(LOCKTAG *tag)
{
	/* an advisory tag with a field4 that pg_advisory_lock never uses */
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0x73686f61, 0x67617465, 7);
}

bool
shoal_gate_acquire(bool write, bool wait, bool session)
{
	LOCKTAG		tag;

	gate_tag(&tag);
	return LockAcquire(&tag, write ? RowExclusiveLock : ShareLock, session, !wait) !=
		LOCKACQUIRE_NOT_AVAIL;
}

void
shoal_gate_release(bool write, bool session)
{
	LOCKTAG		tag;

	gate_tag(&tag);
	LockRelease(&tag, write ? RowExclusiveLock : ShareLock, session);
}

/* ---------------------------------------------------------------------
 * Refreshing the statement's snapshot in place
 * ---------------------------------------------------------------------
 */
static void
copy_snapshot_into(Snapshot dst, Snapshot src)
{
	TransactionId *xip;
	TransactionId *subxip;

	if (dst == src)
		return;
	/* a copied snapshot's arrays are exactly as long as they were: new ones, for the transaction */
	xip = MemoryContextAlloc(TopTransactionContext, sizeof(TransactionId) * Max(src->xcnt, 1));
	subxip = MemoryContextAlloc(TopTransactionContext, sizeof(TransactionId) * Max(src->subxcnt, 1));
	memcpy(xip, src->xip, sizeof(TransactionId) * src->xcnt);
	memcpy(subxip, src->subxip, sizeof(TransactionId) * src->subxcnt);
	dst->xmin = src->xmin;
	dst->xmax = src->xmax;
	dst->xip = xip;
	dst->xcnt = src->xcnt;
	dst->subxip = subxip;
	dst->subxcnt = src->subxcnt;
	dst->suboverflowed = src->suboverflowed;
	dst->takenDuringRecovery = src->takenDuringRecovery;
	dst->whenTaken = src->whenTaken;
	dst->lsn = src->lsn;
	dst->snapXactCompletionCount = 0;
}

/*
 * Make the running statement's snapshot (and, in REPEATABLE READ, the
 * transaction's) current.  Called while the read gate is held, before the
 * statement has read anything.
 *
 * The fresh snapshot is taken into PostgreSQL's own full-size buffer and
 * copied: a REPEATABLE READ transaction's snapshot is a copy whose arrays
 * only hold the transaction ids it had, and GetSnapshotData() into it would
 * write past them when more transactions run now.  The catalog snapshot goes,
 * so that no registered snapshot keeps an older xmin than the ones changed in
 * place.
 */
void
shoal_refresh_snapshot(void)
{
	Snapshot	active;
	Snapshot	fresh;

	if (!ActiveSnapshotSet())
		elog(ERROR, "shoal: no statement snapshot to refresh");
	active = GetActiveSnapshot();
	fresh = GetLatestSnapshot();
	if (IsolationUsesXactSnapshot())
	{
		copy_snapshot_into(GetTransactionSnapshot(), fresh);
		InvalidateCatalogSnapshot();
	}
	copy_snapshot_into(active, fresh);
}

/* ---------------------------------------------------------------------
 * Deferring scans, and taking the cut
 * ---------------------------------------------------------------------
 */
bool
shoal_defer_scan(ForeignScanState *node, Oid server)
{
	if (!deferring)
		return false;
	starting.scans = lappend(starting.scans, node);
	/* a write's target is read in the transaction's own block, for the newest row versions */
	if (!ExecRelationIsTargetRelation(node->ss.ps.state, ((Scan *) node->ss.ps.plan)->scanrelid))
	{
		starting.reads = lappend(starting.reads, node);
		starting.servers = list_append_unique_oid(starting.servers, server);
	}
	return true;
}

/* Does ps read a table of this node? */
static bool
is_local_scan(PlanState *ps)
{
	switch (nodeTag(ps))
	{
		case T_SeqScanState:
		case T_SampleScanState:
		case T_IndexScanState:
		case T_IndexOnlyScanState:
		case T_BitmapHeapScanState:
		case T_TidScanState:
		case T_TidRangeScanState:
			return true;
		default:
			return false;
	}
}

static bool
reads_locally_walker(PlanState *ps, void *context)
{
	if (ps == NULL)
		return false;
	/* a write's target is read at its newest row versions, on no snapshot to keep */
	if (is_local_scan(ps) &&
		!ExecRelationIsTargetRelation(ps->state, ((Scan *) ps->plan)->scanrelid))
		return true;
	return planstate_tree_walker(ps, reads_locally_walker, context);
}

/* Is there a foreign scan in ps's subtree? */
static bool
has_foreign_scan_walker(PlanState *ps, void *context)
{
	if (ps == NULL)
		return false;
	if (IsA(ps, ForeignScanState))
		return true;
	return planstate_tree_walker(ps, has_foreign_scan_walker, context);
}

/*
 * May a foreign scan of the plan run more than once: on the inner side of a
 * nested loop (once per outer row) or in a subplan (once per call)?  Each
 * run is a request of its own, which in READ COMMITTED would take a
 * snapshot of its own on the other node.
 */
static bool
rescans_foreign_walker(PlanState *ps, void *context)
{
	ListCell   *lc;

	if (ps == NULL)
		return false;
	if (IsA(ps, NestLoopState) && has_foreign_scan_walker(innerPlanState(ps), NULL))
		return true;
	foreach(lc, ps->subPlan)
	{
		if (has_foreign_scan_walker(((SubPlanState *) lfirst(lc))->planstate, NULL))
			return true;
	}
	return planstate_tree_walker(ps, rescans_foreign_walker, context);
}

/* Will the statement run on the active snapshot, which a cut may refresh? */
static bool
runs_on_active_snapshot(QueryDesc *qd, int eflags)
{
	return !(eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		qd->snapshot != NULL && ActiveSnapshotSet() && qd->snapshot == GetActiveSnapshot() &&
		!IsolationIsSerializable();
}

/* Is funcid a STABLE function written in SQL or a procedural language? */
static bool
is_user_stable_function(Oid funcid, void *context)
{
	HeapTuple	tuple;
	bool		result = false;

	if (funcid < FirstNormalObjectId)
		return false;			/* built in */
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tuple);

		result = proc->provolatile == PROVOLATILE_STABLE &&
			proc->prolang != INTERNALlanguageId && proc->prolang != ClanguageId;
		ReleaseSysCache(tuple);
	}
	return result;
}

static bool
calls_user_stable_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, is_user_stable_function, context))
		return true;
	return expression_tree_walker(node, calls_user_stable_walker, context);
}

/*
 * Does the plan call a STABLE function that may read tables (one in SQL or
 * a procedural language), in its target lists, conditions (index conditions
 * too), FROM functions or VALUES?  Its statements run on the caller's
 * snapshot, and read in the caller's cut: that cut must then span every
 * node.
 */
static bool
calls_user_stable_planstate_walker(PlanState *ps, void *context)
{
	Plan	   *plan;
	List	   *exprs = NIL;

	if (ps == NULL)
		return false;
	plan = ps->plan;
	/* expressions some node types have, besides the target list and condition of all */
	switch (nodeTag(plan))
	{
		case T_NestLoop:
		case T_MergeJoin:
		case T_HashJoin:
			exprs = list_make1(((Join *) plan)->joinqual);
			break;
		case T_FunctionScan:
			exprs = list_make1(((FunctionScan *) plan)->functions);
			break;
		case T_ValuesScan:
			exprs = list_make1(((ValuesScan *) plan)->values_lists);
			break;
		case T_IndexScan:
			exprs = list_make2(((IndexScan *) plan)->indexqualorig,
							   ((IndexScan *) plan)->indexorderbyorig);
			break;
		case T_IndexOnlyScan:
			exprs = list_make2(((IndexOnlyScan *) plan)->indexqual,
							   ((IndexOnlyScan *) plan)->indexorderby);
			break;
		case T_BitmapIndexScan:
			exprs = list_make1(((BitmapIndexScan *) plan)->indexqualorig);
			break;
		case T_Result:
			exprs = list_make1(((Result *) plan)->resconstantqual);
			break;
		default:
			break;
	}
	exprs = lappend(lappend(exprs, plan->targetlist), plan->qual);
	if (calls_user_stable_walker((Node *) exprs, NULL))
		return true;
	return planstate_tree_walker(ps, calls_user_stable_planstate_walker, context);
}

/* The cut of the running statement whose snapshot a nested statement shares (0: none). */
static int
cut_of_snapshot(Snapshot snapshot)
{
	ListCell   *lc;
	int			i = 0;

	foreach(lc, cut_queries)
	{
		if (((QueryDesc *) lfirst(lc))->snapshot == snapshot)
			return list_nth_int(cut_ids, i);
		i++;
	}
	return 0;
}

/*
 * Does the statement read on a snapshot of its own, which a cut may refresh?
 * A SELECT that locks rows (FOR UPDATE) reads them in the transaction's own
 * blocks, as writes do; a write reads its other tables like a SELECT.
 */
static bool
reads_on_own_snapshot(QueryDesc *qd, int eflags)
{
	switch (qd->operation)
	{
		case CMD_SELECT:
			if (qd->plannedstmt->rowMarks != NIL)
				return false;
			break;
		case CMD_INSERT:
		case CMD_UPDATE:
		case CMD_DELETE:
		case CMD_MERGE:
			break;
		default:
			return false;
	}
	return runs_on_active_snapshot(qd, eflags);
}

/* Is this the statement that took the REPEATABLE READ transaction's snapshot? */
static bool
first_of_repeatable_read(void)
{
	if (!IsolationUsesXactSnapshot())
		return false;
	if (rr_decided_lxid == MyProc->lxid)
		return false;
	rr_decided_lxid = MyProc->lxid;
	return true;
}

/*
 * Does the statement fix a REPEATABLE READ transaction's snapshot in a
 * database of a shoal cluster?  Whatever it reads, its snapshot becomes the
 * transaction's, which later statements read on every node: so it is a cut.
 * Nested statements never come first: they run in a statement that took the
 * snapshot (or in planning); a utility statement that comes first takes the
 * cut itself (shoal_utility_cut), before the statements it runs.
 */
static bool
takes_transaction_cut(QueryDesc *qd, int eflags)
{
	if (nesting > 0 || deferring || shoal_in_bgworker || !first_of_repeatable_read())
		return false;
	return no_cuts == 0 && shoal_consistent_snapshots && runs_on_active_snapshot(qd, eflags) &&
		OidIsValid(get_extension_oid("shoal", true));
}

/*
 * Ask shoal.transactions.snapshots for a cut, of every node or of those the
 * scans read; returns its id, 0 for none.
 */
static int
take_cut(List *scans, bool reads_locally, bool every_node, bool whole_transaction)
{
	PyObject   *handlers = PyList_New(0);
	PyObject   *take;
	PyObject   *result;
	ListCell   *lc;
	long		cut;

	if (handlers == NULL)
		shoal_python_raise("taking a snapshot");
	foreach(lc, scans)
	{
		if (PyList_Append(handlers, shoal_scan_handler(lfirst(lc))) < 0)
		{
			Py_DECREF(handlers);
			shoal_python_raise("taking a snapshot");
		}
	}
	take = shoal_import_attr("shoal.transactions.snapshots", "take");
	result = shoal_call_method(take, "__call__",
							   Py_BuildValue("(NOOO)", handlers,
											 reads_locally ? Py_True : Py_False,
											 every_node ? Py_True : Py_False,
											 whole_transaction ? Py_True : Py_False));
	Py_DECREF(take);
	cut = PyLong_AsLong(result);
	Py_DECREF(result);
	if (cut == -1 && PyErr_Occurred())
		shoal_python_raise("taking a snapshot");
	return (int) cut;
}

/* take_cut, with the catalog reads of taking it not counted as the client's */
static int
take_cut_guarded(List *scans, bool reads_locally, bool every_node, bool whole_transaction)
{
	int			cut = 0;

	shoal_python_ensure();
	no_cuts++;
	PG_TRY();
	{
		cut = take_cut(scans, reads_locally, every_node, whole_transaction);
	}
	PG_FINALLY();
	{
		no_cuts--;
	}
	PG_END_TRY();
	return cut;
}

/*
 * Start the executor with its foreign scans deferred, or started as they
 * come.  A statement that runs while another's executor starts (a function
 * that initial pruning calls) starts its own: its executor state is gone
 * before the other's scans start.
 */
static void
start_executor(QueryDesc *qd, int eflags, bool defer)
{
	bool		outer = deferring;

	deferring = defer;
	PG_TRY();
	{
		if (prev_executor_start)
			prev_executor_start(qd, eflags);
		else
			standard_ExecutorStart(qd, eflags);
	}
	PG_FINALLY();
	{
		deferring = outer;
	}
	PG_END_TRY();
}

/*
 * Start the executor of qd with its scans deferred; what started is in
 * *started.  Statements starting meanwhile have a Starting of their own.
 */
static void
start_deferring(QueryDesc *qd, int eflags, bool whole_transaction, Starting *started)
{
	Starting	outer = starting;

	memset(&starting, 0, sizeof(starting));
	starting.qd = qd;
	starting.whole_transaction = whole_transaction;
	PG_TRY();
	{
		start_executor(qd, eflags, true);
		*started = starting;
	}
	PG_FINALLY();
	{
		starting = outer;
	}
	PG_END_TRY();
}

/* Start the deferred scans in the statement's cut (0: none), which ends with it. */
static void
start_in_cut(QueryDesc *qd, List *scans, int cut)
{
	ListCell   *lc;

	if (cut != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		cut_queries = lappend(cut_queries, qd);
		cut_ids = lappend_int(cut_ids, cut);
		MemoryContextSwitchTo(old);
	}
	foreach(lc, scans)
		shoal_scan_start_deferred(lfirst(lc), cut);
}

static void
shoal_executor_start(QueryDesc *qd, int eflags)
{
	Starting	started;
	bool		reads_locally;
	bool		whole_transaction;
	bool		every_node = false;
	int			cut = 0;
	int			inherited = 0;
	ListCell   *lc;

	/* workers run other nodes' statements, inside the snapshots those nodes chose */
	whole_transaction = takes_transaction_cut(qd, eflags);

	/*
	 * A statement that starts on the snapshot of a statement whose executor
	 * is starting is a function that initial pruning calls (WHERE key =
	 * f()): that statement takes its cut now, of every node, and the
	 * function reads in it.  (A later statement of a REPEATABLE READ
	 * transaction reads in the transaction's cut already.)
	 */
	if (deferring && starting.qd != NULL && qd->snapshot == starting.qd->snapshot &&
		no_cuts == 0 && !shoal_in_bgworker &&
		(starting.whole_transaction || !IsolationUsesXactSnapshot()) &&
		(starting.cut_taken || OidIsValid(get_extension_oid("shoal", true))))
	{
		if (!starting.cut_taken)
		{
			starting.cut = take_cut_guarded(NIL, true, true, starting.whole_transaction);
			starting.cut_taken = true;
		}
		inherited = starting.cut;
	}
	/* on the snapshot of a running statement (in a STABLE function): in its cut, if it has one */
	if (!whole_transaction && nesting > 0 && no_cuts == 0 && !deferring &&
		list_member_ptr(running_snapshots, qd->snapshot))
		inherited = cut_of_snapshot(qd->snapshot);
	if (!whole_transaction && inherited == 0 &&
		(!shoal_consistent_snapshots || no_cuts > 0 || deferring || shoal_in_bgworker ||
		 (nesting > 0 && list_member_ptr(running_snapshots, qd->snapshot)) ||
		 !reads_on_own_snapshot(qd, eflags)))
	{
		start_executor(qd, eflags, false);
		return;
	}
	start_deferring(qd, eflags, whole_transaction, &started);

	if (inherited != 0)
	{
		foreach(lc, started.scans)
			shoal_scan_start_deferred(lfirst(lc), inherited);
		return;
	}
	if (started.cut_taken)
	{
		start_in_cut(qd, started.scans, whole_transaction ? 0 : started.cut);
		return;
	}
	reads_locally = reads_locally_walker(qd->planstate, NULL);
	if (!whole_transaction && !IsolationUsesXactSnapshot())
		every_node = calls_user_stable_planstate_walker(qd->planstate, NULL) &&
			OidIsValid(get_extension_oid("shoal", true));
	/*
	 * A REPEATABLE READ transaction keeps the snapshot of its first
	 * statement.  In READ COMMITTED, a statement needs one when it reads two
	 * nodes or more, or one other node more than once, or calls functions
	 * that read on its snapshot (wherever they read).  A write's targets are
	 * not reads: they are read for the newest row versions, in the
	 * transaction's own blocks.
	 */
	if (whole_transaction || every_node ||
		(!IsolationUsesXactSnapshot() &&
		 (list_length(started.servers) + (reads_locally ? 1 : 0) >= 2 ||
		  (started.servers != NIL && (list_length(started.reads) >= 2 ||
									  rescans_foreign_walker(qd->planstate, NULL))))))
		cut = take_cut_guarded(started.reads, reads_locally || every_node,
							   whole_transaction || every_node, whole_transaction);
	start_in_cut(qd, started.scans, whole_transaction ? 0 : cut);
}

static void
end_cut(int cut)
{
	PyObject   *end = shoal_import_attr("shoal.transactions.snapshots", "end");
	PyObject   *result = shoal_call_method(end, "__call__", Py_BuildValue("(i)", cut));

	Py_DECREF(end);
	Py_DECREF(result);
}

static void
shoal_executor_end(QueryDesc *qd)
{
	int			i = 0;
	ListCell   *lc;

	foreach(lc, cut_queries)
	{
		if (lfirst(lc) == qd)
		{
			int			cut = list_nth_int(cut_ids, i);

			cut_queries = list_delete_nth_cell(cut_queries, i);
			cut_ids = list_delete_nth_cell(cut_ids, i);
			end_cut(cut);
			break;
		}
		i++;
	}
	if (prev_executor_end)
		prev_executor_end(qd);
	else
		standard_ExecutorEnd(qd);
}

static void
shoal_executor_run(QueryDesc *qd, ScanDirection direction, uint64 count, bool execute_once)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	running_snapshots = lcons(qd->snapshot, running_snapshots);
	MemoryContextSwitchTo(old);
	nesting++;
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(qd, direction, count, execute_once);
		else
			standard_ExecutorRun(qd, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		nesting--;
		running_snapshots = list_delete_first(running_snapshots);
	}
	PG_END_TRY();
}

/*
 * Does a utility statement, first in a REPEATABLE READ transaction, fix a
 * snapshot that statements read on?  In a transaction block, later
 * statements read on it; alone, it matters when the statement reads tables
 * itself or runs statements that do.
 */
static bool
utility_fixes_snapshot(PlannedStmt *pstmt)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsTransactionBlock())
		return true;
	return IsA(stmt, DoStmt) || IsA(stmt, CallStmt) || IsA(stmt, CopyStmt) ||
		IsA(stmt, CreateTableAsStmt) || IsA(stmt, ExplainStmt) || IsA(stmt, ExecuteStmt) ||
		IsA(stmt, RefreshMatViewStmt) || IsA(stmt, DeclareCursorStmt);
}

/*
 * A utility statement that takes a REPEATABLE READ transaction's snapshot
 * is its first statement: it takes the transaction's cut, before shoal's
 * DDL handling sends anything to other nodes (shoal_process_utility calls
 * this first).  Statements it runs (COPY's or EXPLAIN ANALYZE's query, a DO
 * block's) are nested, and read in that cut.
 */
void
shoal_utility_cut(PlannedStmt *pstmt)
{
	if (nesting > 0 || shoal_in_bgworker || !PlannedStmtRequiresSnapshot(pstmt) ||
		!first_of_repeatable_read())
		return;
	if (!utility_fixes_snapshot(pstmt) || !shoal_consistent_snapshots || no_cuts > 0 ||
		IsolationIsSerializable() || !ActiveSnapshotSet() ||
		!OidIsValid(get_extension_oid("shoal", true)))
		return;
	(void) take_cut_guarded(NIL, true, true, true);
}

static void
nested_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			   ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv,
			   DestReceiver *dest, QueryCompletion *qc)
{
	nesting++;
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								 dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
									dest, qc);
	}
	PG_FINALLY();
	{
		nesting--;
	}
	PG_END_TRY();
}

static PlannedStmt *
nested_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	PlannedStmt *result;

	nesting++;
	no_cuts++;
	PG_TRY();
	{
		if (prev_planner)
			result = prev_planner(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_FINALLY();
	{
		nesting--;
		no_cuts--;
	}
	PG_END_TRY();
	return result;
}

/* Statements that ended with an error leave their cuts to the transaction's end (Python). */
static void
snapshot_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		cut_queries = NIL;		/* TopTransactionContext goes away */
		cut_ids = NIL;
		deferring = false;
		memset(&starting, 0, sizeof(starting));
	}
}

void
shoal_snapshot_init(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = shoal_executor_start;
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = shoal_executor_run;
	prev_executor_end = ExecutorEnd_hook;
	ExecutorEnd_hook = shoal_executor_end;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = nested_utility;
	prev_planner = planner_hook;
	planner_hook = nested_planner;
	RegisterXactCallback(snapshot_xact_callback, NULL);
}
