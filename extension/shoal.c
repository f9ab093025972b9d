/*-------------------------------------------------------------------------
 * shoal.c
 *		Module entry point: configuration and the hooks shoal installs.
 *
 * The interpreter itself is started lazily, by the first backend call
 * that needs it (see pyhost.c); loading the library costs nothing else.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *shoal_python_path = NULL;
char	   *shoal_python_executable = NULL;

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * PREPARE TRANSACTION's identifier is not given to transaction callbacks,
 * so remember it here for the handlers' pre_prepare and prepare hooks.
 */
static void
shoal_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, TransactionStmt) &&
		((TransactionStmt *) parsetree)->kind == TRANS_STMT_PREPARE)
	{
		if (shoal_prepare_gid)
			pfree(shoal_prepare_gid);
		shoal_prepare_gid = MemoryContextStrdup(TopMemoryContext,
												((TransactionStmt *) parsetree)->gid);
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
_PG_init(void)
{
	DefineCustomStringVariable("shoal.python_path",
							   "Directories added to the embedded Python's sys.path.",
							   "A colon-separated list, put in front of sys.path when a backend "
							   "starts its interpreter, so that handler modules can be imported.",
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

	MarkGUCPrefixReserved("shoal");

	shoal_handlers_init();
	shoal_xact_init();

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = shoal_process_utility;
}
