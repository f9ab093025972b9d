/*-------------------------------------------------------------------------
 * shoal.c
 *		Module entry point: configuration and the hooks shoal installs.
 *
 * The interpreter itself is started lazily, by the first backend call
 * that needs it (see pyhost.c); loading the library costs nothing else.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *shoal_python_path = NULL;
char	   *shoal_python_executable = NULL;
char	   *shoal_node_name = NULL;
int			shoal_mux_port = 0;
int			shoal_workers = 8;
int			shoal_deadlock_timeout = 2000;
bool		shoal_two_phase_commit = true;
char	   *shoal_crash_point = NULL;
char	   *shoal_database = NULL;
char	   *shoal_cluster_secret = NULL;
int			shoal_metrics_port = 0;
char	   *shoal_mux_entry = NULL;
char	   *shoal_worker_entry = NULL;

static ProcessUtility_hook_type prev_process_utility = NULL;
static planner_hook_type prev_planner = NULL;

/* Has the partitioned table relid a foreign table among its partitions? */
bool
shoal_has_foreign_partitions(Oid relid)
{
	ListCell   *lc;

	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
		if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_FOREIGN_TABLE)
			return true;
	return false;
}

/*
 * COPY t TO of a partitioned table with foreign partitions (a distributed
 * table) becomes COPY (SELECT ... FROM t) TO, which PostgreSQL allows: the
 * same rows as COPY t TO gives for a plain table.  NULL when not such.
 */
static PlannedStmt *
distributed_copy_to(PlannedStmt *pstmt)
{
	CopyStmt   *copy = (CopyStmt *) pstmt->utilityStmt;
	PlannedStmt *result;
	CopyStmt   *rewritten;
	SelectStmt *select;
	Oid			relid;
	ListCell   *lc;

	if (copy->is_from || copy->relation == NULL || copy->query != NULL)
		return NULL;
	relid = RangeVarGetRelid(copy->relation, AccessShareLock, true);
	if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE ||
		!shoal_has_foreign_partitions(relid))
		return NULL;

	select = makeNode(SelectStmt);
	if (copy->attlist == NIL)
	{
		ColumnRef  *star = makeNode(ColumnRef);
		ResTarget  *target = makeNode(ResTarget);

		star->fields = list_make1(makeNode(A_Star));
		star->location = -1;
		target->val = (Node *) star;
		target->location = -1;
		select->targetList = list_make1(target);
	}
	foreach(lc, copy->attlist)
	{
		ColumnRef  *column = makeNode(ColumnRef);
		ResTarget  *target = makeNode(ResTarget);

		column->fields = list_make1(makeString(pstrdup(strVal(lfirst(lc)))));
		column->location = -1;
		target->val = (Node *) column;
		target->location = -1;
		select->targetList = lappend(select->targetList, target);
	}
	select->fromClause = list_make1(copyObject(copy->relation));

	result = copyObject(pstmt);
	rewritten = (CopyStmt *) result->utilityStmt;
	rewritten->query = (Node *) select;
	rewritten->relation = NULL;
	rewritten->attlist = NIL;
	return result;
}

/*
 * INSERT ... ON CONFLICT (key) into a distributed table: the conflict target
 * cannot be inferred on the parent (upsert.c), so the planner gets the
 * statement without it, and the plan keeps it for the foreign partitions.
 *
 * And the plans of prepared statements that prune partitions at executor
 * start get the cost of what they will run (pruning.c).
 */
static PlannedStmt *
shoal_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	PlannedStmt *result;
	List	   *conflict_targets = shoal_upsert_take_target(parse);

	if (prev_planner)
		result = prev_planner(parse, query_string, cursorOptions, boundParams);
	else
		result = standard_planner(parse, query_string, cursorOptions, boundParams);
	if (conflict_targets != NIL)
		shoal_upsert_keep_target(result, conflict_targets);
	shoal_cost_initial_pruning(result);
	return result;
}

/*
 * PREPARE TRANSACTION's identifier is not given to transaction callbacks,
 * so remember it here for the handlers' pre_prepare and prepare hooks.
 * DDL that may concern distributed or global tables goes through Python
 * (see sqlfunc.c).
 */
static void
shoal_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	PlannedStmt *original;
	PyObject   *after;

	shoal_utility_cut(pstmt);
	if (IsA(parsetree, TransactionStmt) &&
		((TransactionStmt *) parsetree)->kind == TRANS_STMT_PREPARE)
	{
		if (shoal_prepare_gid)
			pfree(shoal_prepare_gid);
		shoal_prepare_gid = MemoryContextStrdup(TopMemoryContext,
												((TransactionStmt *) parsetree)->gid);
	}

	/* DDL on distributed and global tables: shoal.sharding.ddl rewrites or propagates it */
	if (IsA(parsetree, CopyStmt))
	{
		PlannedStmt *copy_query = distributed_copy_to(pstmt);

		if (copy_query != NULL)
		{
			pstmt = copy_query;
			parsetree = pstmt->utilityStmt;
			readOnlyTree = false;
		}
	}

	original = pstmt;
	after = shoal_utility_before(&pstmt, queryString);
	if (after == Py_None)
	{
		/* Python did it all */
		Py_DECREF(after);
		if (qc)
			SetQueryCompletion(qc, CreateCommandTag(parsetree), 0);
		return;
	}
	if (pstmt != original)
		readOnlyTree = false;	/* shoal's copy, without its options */

	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		Py_XDECREF(after);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (after != NULL)
		shoal_utility_after(after);
}

void
_PG_init(void)
{
	DefineCustomStringVariable("shoal.python_path",
							   "Directories added to the embedded Python's sys.path.",
							   "A colon-separated list, put in front of sys.path when a backend "
							   "first uses the interpreter, so that handler modules can be imported.",
							   &shoal_python_path,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.python_executable",
							   "The Python whose environment backends embed.",
							   "Usually the python of a virtual environment holding shoal and its "
							   "dependencies; its pyvenv.cfg selects the site-packages.",
							   &shoal_python_executable,
							   SHOAL_PYTHON,
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	/* The multiplexer (see bgworker.c and multiplexer/) */
	DefineCustomStringVariable("shoal.node_name",
							   "This node's name in shoal.nodes.",
							   "Set by shoal up.",
							   &shoal_node_name,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("shoal.mux_port",
							"TCP port on which the multiplexer serves its peers.",
							"0 means PostgreSQL's port + 1000.",
							&shoal_mux_port,
							0, 0, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shoal.workers",
							"Number of worker processes executing jobs for other nodes.",
							"A transaction that writes on this node from another holds one "
							"until it ends: size it for the concurrent writers.",
							&shoal_workers,
							8, 0, 256,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shoal.deadlock_timeout",
							"How long a distributed transaction may wait for a lock or a worker.",
							"Longer waits are taken for a deadlock across nodes (which no single "
							"node can see): the waiting statement fails with SQLSTATE 40P01. "
							"The multiplexer and its workers read it when they start.",
							&shoal_deadlock_timeout,
							2000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("shoal.two_phase_commit",
							 "Commit transactions that wrote on several nodes in two phases.",
							 "Off commits each node in one phase, one after the other: faster, "
							 "but a failure between two commits leaves the transaction half done. "
							 "For measuring what atomic commit costs; leave it on.",
							 &shoal_two_phase_commit,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("shoal.consistent_snapshots",
							 "Reads that span nodes see one cut of the cluster.",
							 "Distributed commits and multi-node reads then take a gate on each "
							 "node; off measures what that costs.",
							 &shoal_consistent_snapshots,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.crash_point",
							   "For tests: the step of a distributed commit at which the backend "
							   "kills itself (after_prepare, after_local_commit), or stalls for "
							   "3 s (stall_after_prepare...).",
							   NULL,
							   &shoal_crash_point,
							   "",
							   PGC_SUSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.database",
							   "The database the multiplexer and its workers connect to.",
							   NULL,
							   &shoal_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.cluster_secret",
							   "The cluster's shared CURVE secret key (Z85).",
							   "Written by shoal up; authenticates the multiplexers to each other.",
							   &shoal_cluster_secret,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("shoal.metrics_port",
							"TCP port of the multiplexer's Prometheus endpoint.",
							"0 means shoal.mux_port + 1.",
							&shoal_metrics_port,
							0, 0, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.mux_entry",
							   "The Python function the multiplexer process runs, as module:function.",
							   "For tests; the default is the multiplexer.",
							   &shoal_mux_entry,
							   "shoal.multiplexer.daemon:main",
							   PGC_POSTMASTER,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("shoal.worker_entry",
							   "The Python function a worker process runs, as module:function.",
							   "Called with the worker's index.  For tests; the default is the worker.",
							   &shoal_worker_entry,
							   "shoal.multiplexer.worker:main",
							   PGC_POSTMASTER,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("shoal");

	shoal_bgworkers_init();
	shoal_handlers_init();
	shoal_xact_init();
	shoal_snapshot_init();
	if (process_shared_preload_libraries_in_progress)
		shoal_python_preload();

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = shoal_process_utility;
	prev_planner = planner_hook;
	planner_hook = shoal_planner;
}
