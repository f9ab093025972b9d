/*-------------------------------------------------------------------------
 * bgworker.c
 *		The multiplexer and its worker pool as PostgreSQL background workers.
 *
 * With shoal in shared_preload_libraries the postmaster starts one "shoal
 * multiplexer" and shoal.workers "shoal worker" processes, and restarts any
 * of them that exits, a second later.  Each connects to shoal.database,
 * starts the embedded Python and hands over to a long-running Python
 * function named by shoal.mux_entry (called with no arguments) or
 * shoal.worker_entry (called with the worker's index).  The jobs a worker
 * runs for other nodes are executed by jobs.c.
 *
 * bgw_main_arg is the worker's index, 0 .. shoal.workers - 1, or -1 for the
 * multiplexer.
 *
 * The Python functions return, or raise QueryCanceled, once they see a
 * termination pending (_shoal_pg.check_interrupts(), wait()); SIGTERM also
 * trips Python's SIGINT handling so that Python blocked in a system call
 * wakes up to see it.  Whatever happens, the process ends here: quietly on
 * SIGTERM (PostgreSQL's own FATAL message), with an ERROR when Python
 * raised, which makes the postmaster start it again.
 *
 * Also here: shoal.mux_stats_json(), behind the view shoal.mux_stats.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(shoal_mux_stats_json);
PGDLLEXPORT void shoal_bgworker_main(Datum main_arg);

/* True in the multiplexer and the workers: the processes jobs.c may run in. */
bool		shoal_in_bgworker = false;

/*
 * State shared by shoal's processes, which outlives their restarts: a
 * process that could not connect to shoal.database says so here, so that
 * the next ones wait for the database quietly instead of failing (and
 * logging) every second.
 */
typedef struct ShoalBgShared
{
	pg_atomic_uint32 connect_failed;
} ShoalBgShared;

static ShoalBgShared *bg_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set while BackgroundWorkerInitializeConnection runs: a FATAL then means we could not connect. */
static bool connecting = false;

/* Python has our SIGINT handler: until then, tripping SIGINT in Python would only print a warning. */
static volatile sig_atomic_t python_sigint_ready = false;

static void
bg_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ShoalBgShared)));
}

static void
bg_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bg_shared = ShmemInitStruct("shoal background workers", sizeof(ShoalBgShared), &found);
	if (!found)
		pg_atomic_init_u32(&bg_shared->connect_failed, 0);
	LWLockRelease(AddinShmemInitLock);
}

static void
register_one(const char *name, const char *type, int index)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "shoal", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "shoal_bgworker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, type, BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(index);
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/*
 * Called by _PG_init: registers the multiplexer and the workers when the
 * library is preloaded (a library loaded later cannot register static
 * workers, and then shoal runs without its multiplexer).
 */
void
shoal_bgworkers_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = bg_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bg_shmem_startup;

	/* the postmaster registers only what fits, silently: say why workers are missing */
	if (shoal_workers + 2 > max_worker_processes)
		ereport(WARNING,
				(errmsg("shoal: max_worker_processes (%d) leaves no room for the multiplexer and "
						"shoal.workers (%d) workers", max_worker_processes, shoal_workers),
				 errhint("Set max_worker_processes to at least shoal.workers + 2, plus what "
						 "parallel query and replication need (shoal up sets 32).")));
	register_one("shoal multiplexer", "shoal multiplexer", -1);
	for (int i = 0; i < shoal_workers; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "shoal worker %d", i);
		register_one(name, "shoal worker", i);
	}
}

/*
 * SIGTERM: PostgreSQL's die(), then wake Python up as a cancel would (see
 * pyhost.c), so that Python code blocked in a system call gets to see the
 * pending termination (its SIGINT handler raises QueryCanceled).
 */
static void
bgworker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	die(postgres_signal_arg);
	if (python_sigint_ready)
		PyErr_SetInterruptEx(SIGINT);
	errno = save_errno;
}

static void
note_connect_failure(int code, Datum arg)
{
	if (connecting && bg_shared != NULL)
		pg_atomic_write_u32(&bg_shared->connect_failed, 1);
}

/*
 * Whether a database exists, from a process connected to none: a plain
 * scan of pg_database, as the autovacuum launcher lists databases (its
 * indexes cannot be used without a database).
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		found = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), name) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * A process connects to one database for life, and connecting to one that
 * does not exist is FATAL.  So after a failure, the next processes connect
 * to no database, look for shoal.database once a second, and when it is
 * there exit to be started again, this time to connect to it.
 */
static void
wait_for_database(int index) pg_attribute_noreturn();

static void
wait_for_database(int index)
{
	bool		logged = false;

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	for (;;)
	{
		if (database_exists(shoal_database))
			break;
		if (!logged && index < 0)
			ereport(LOG,
					(errmsg("shoal: database \"%s\" does not exist; the multiplexer and its workers wait for it",
							shoal_database),
					 errhint("Create the database, or set shoal.database.")));
		logged = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	pg_atomic_write_u32(&bg_shared->connect_failed, 0);
	proc_exit(1);
}

static void
connect_database(int index)
{
	if (bg_shared != NULL && pg_atomic_read_u32(&bg_shared->connect_failed) != 0)
		wait_for_database(index);
	before_shmem_exit(note_connect_failure, (Datum) 0);
	connecting = true;
	BackgroundWorkerInitializeConnection(shoal_database, NULL, 0);
	connecting = false;
}

/*
 * Python's SIGINT handler in shoal's processes.  In a backend (pyhost.c) a
 * SIGINT raises QueryCanceled wherever Python happens to be, since the
 * query is over anyway.  A worker must go on after a cancel, and a cancel
 * that arrives between jobs would then break its loop at a random point:
 * here only a termination raises asynchronously.  A cancel still stops SQL
 * (CHECK_FOR_INTERRUPTS), and Python code sees it where it asks:
 * check_interrupts() and wait().  The signal still interrupts blocking
 * system calls, so that Python gets to run this handler.
 */
static PyObject *
bgworker_on_sigint(PyObject *self, PyObject *args)
{
	if (ProcDiePending)
	{
		PyErr_SetString(shoal_exc_query_canceled, "terminating connection");
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyMethodDef on_sigint_def = {
	"shoal_bgworker_on_sigint", bgworker_on_sigint, METH_VARARGS,
	"Raise QueryCanceled on a pending termination; a cancel is left to check_interrupts()."
};

static void
install_python_sigint(void)
{
	struct sigaction chained;
	PyObject   *signal_mod;
	PyObject   *handler;
	PyObject   *result = NULL;

	/* signal.signal() also installs Python's C-level handler: keep pyhost.c's chain instead */
	if (sigaction(SIGINT, NULL, &chained) != 0)
		elog(ERROR, "sigaction failed: %m");
	signal_mod = PyImport_ImportModule("signal");
	handler = signal_mod ? PyCFunction_New(&on_sigint_def, NULL) : NULL;
	if (handler != NULL)
		result = PyObject_CallMethod(signal_mod, "signal", "iO", SIGINT, handler);
	Py_XDECREF(handler);
	Py_XDECREF(signal_mod);
	if (result == NULL)
		shoal_python_raise("installing the SIGINT handler");
	Py_DECREF(result);
	if (sigaction(SIGINT, &chained, NULL) != 0)
		elog(ERROR, "sigaction failed: %m");
	python_sigint_ready = true;
}

/*
 * Call the Python entry point "module:function" and end the process when it
 * returns.
 */
static void
run_entry(int index) pg_attribute_noreturn();

static void
run_entry(int index)
{
	const char *entry = index < 0 ? shoal_mux_entry : shoal_worker_entry;
	const char *guc = index < 0 ? "shoal.mux_entry" : "shoal.worker_entry";
	char	   *module = pstrdup(entry ? entry : "");
	char	   *colon = strrchr(module, ':');
	PyObject   *callable;
	PyObject   *result;

	if (colon == NULL || colon == module || colon[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for %s: \"%s\"", guc, module),
				 errhint("Name a Python function as module:function.")));
	*colon = '\0';

	shoal_python_ensure();
	install_python_sigint();
	CHECK_FOR_INTERRUPTS();		/* a SIGTERM while Python started */
	callable = shoal_import_attr(module, colon + 1);
	if (index < 0)
		result = PyObject_CallNoArgs(callable);
	else
	{
		PyObject   *arg = PyLong_FromLong(index);

		result = arg ? PyObject_CallOneArg(callable, arg) : NULL;
		Py_XDECREF(arg);
	}
	Py_DECREF(callable);

	if (ProcDiePending)
	{
		/* The normal way out: let PostgreSQL report the termination in its own words. */
		Py_XDECREF(result);
		PyErr_Clear();
		CHECK_FOR_INTERRUPTS();
	}
	if (result == NULL)
		shoal_python_raise(entry);	/* ERROR: logged, and the postmaster restarts us */
	Py_DECREF(result);
	if (shoal_pgmodule_error_pending())
		shoal_pgmodule_rethrow();
	ereport(LOG,
			(errmsg("shoal: %s returned; the %s restarts", entry,
					index < 0 ? "multiplexer" : "worker")));
	proc_exit(1);
}

void
shoal_bgworker_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);

	/*
	 * A worker's job is cancelled with SIGINT, as a backend's query is.
	 * StatementCancelHandler must be in place before Python starts: pyhost.c
	 * chains Python's handling after whatever SIGINT handler it finds.
	 */
	pqsignal(SIGTERM, bgworker_sigterm);
	pqsignal(SIGINT, StatementCancelHandler);
	BackgroundWorkerUnblockSignals();

	shoal_in_bgworker = true;
	connect_database(index);
	pgstat_report_activity(STATE_IDLE, NULL);
	run_entry(index);
}

/*
 * shoal.mux_stats_json() -> jsonb: the multiplexer's statistics, as the
 * Python client module reads them (a JSON array of objects, one per peer).
 */
Datum
shoal_mux_stats_json(PG_FUNCTION_ARGS)
{
	PyObject   *callable = shoal_import_attr("shoal.multiplexer.client", "stats_json");
	PyObject   *result = PyObject_CallNoArgs(callable);
	const char *utf8;
	Py_ssize_t	len;
	char	   *json;

	Py_DECREF(callable);
	if (shoal_pgmodule_error_pending())
	{
		Py_XDECREF(result);
		shoal_pgmodule_rethrow();
	}
	if (result == NULL)
		shoal_python_raise("shoal.multiplexer.client.stats_json()");
	if (!PyUnicode_Check(result))
	{
		const char *tname = Py_TYPE(result)->tp_name;

		json = pstrdup(tname);
		Py_DECREF(result);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("shoal.multiplexer.client.stats_json() returned %s, not str", json)));
	}
	utf8 = PyUnicode_AsUTF8AndSize(result, &len);
	if (utf8 == NULL)
	{
		Py_DECREF(result);
		shoal_python_raise("shoal.multiplexer.client.stats_json()");
	}
	json = pnstrdup(utf8, len);
	Py_DECREF(result);
	json = pg_any_to_server(json, (int) len, PG_UTF8);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
