/*-------------------------------------------------------------------------
 * xact.c
 *		Transaction callbacks, delivered to the handlers a transaction used.
 *
 * A handler joins the transaction when a scan or modification of its table
 * starts (begin), and hears of savepoints, pre-commit, commit, abort and
 * the two phases of PREPARE TRANSACTION.  Errors before the commit point
 * abort the transaction; errors after it can only be logged.
 *
 * Also the local half of shoal's deadlock policy: no node sees a wait cycle
 * that crosses nodes, so a transaction with work on other nodes waits for a
 * lock here at most shoal.deadlock_timeout, and the lock timeout it then
 * gets is reported as the deadlock it probably is (SQLSTATE 40P01, which
 * clients such as pgbench retry).
 *
 * And the record of a distributed commit's decision, on every such commit's
 * path.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

char	   *shoal_prepare_gid = NULL;

/* this transaction's lock_timeout was set by shoal_xact_guard_lock_waits */
static bool lock_waits_guarded = false;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* Python list of the handlers this transaction used, or NULL. */
static PyObject *participants = NULL;

void
shoal_xact_touch(PyObject *handler)
{
	PyObject   *result;
	int			found;

	if (participants == NULL)
	{
		participants = PyList_New(0);
		if (participants == NULL)
			shoal_python_raise("starting a transaction");
	}
	found = PySequence_Contains(participants, handler);
	if (found < 0)
		shoal_python_raise("starting a transaction");
	if (found)
		return;
	if (PyList_Append(participants, handler) < 0)
		shoal_python_raise("starting a transaction");
	result = shoal_call_method(handler, "begin",
							   Py_BuildValue("(O)", IsolationUsesXactSnapshot() ? Py_True : Py_False));
	Py_DECREF(result);
}

/*
 * Call method on every participant.  must_succeed: a failure is an ERROR
 * (before the commit point); otherwise a WARNING, and the others still
 * hear of it.
 */
static void
notify(const char *method, PyObject *args, bool must_succeed)
{
	PyObject   *list = participants;

	if (list == NULL)
	{
		Py_XDECREF(args);
		return;
	}
	for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
	{
		PyObject   *handler = PyList_GET_ITEM(list, i);
		PyObject   *callable = PyObject_GetAttrString(handler, method);
		PyObject   *result = NULL;

		if (callable != NULL)
		{
			result = args ? PyObject_Call(callable, args, NULL) : PyObject_CallNoArgs(callable);
			Py_DECREF(callable);
		}
		if (shoal_pgmodule_error_pending())
		{
			/* a PostgreSQL error the handler caught: it counts as the handler's failure */
			Py_XDECREF(result);
			if (must_succeed)
			{
				Py_XDECREF(args);
				shoal_pgmodule_rethrow();
			}
			shoal_pgmodule_demote();
			PyErr_Clear();
			continue;
		}
		if (result == NULL)
		{
			/* args is still needed by the next handlers: drop it only when leaving */
			if (must_succeed)
			{
				Py_XDECREF(args);
				shoal_python_raise(method);
			}
			shoal_python_warn(method);
			continue;
		}
		Py_DECREF(result);
	}
	Py_XDECREF(args);
}

static void
forget_participants(void)
{
	Py_CLEAR(participants);
}

static PyObject *
gid_args(void)
{
	if (shoal_prepare_gid != NULL)
		return Py_BuildValue("(s)", shoal_prepare_gid);
	return Py_BuildValue("(O)", Py_None);
}

/*
 * The transaction has work on other nodes: bound its lock waits here by
 * shoal.deadlock_timeout (for this transaction only, like SET LOCAL), unless
 * the session's own lock_timeout is shorter.
 */
void
shoal_xact_guard_lock_waits(void)
{
	char		value[32];

	if (lock_waits_guarded || shoal_deadlock_timeout <= 0)
		return;
	lock_waits_guarded = true;
	if (LockTimeout > 0 && LockTimeout <= shoal_deadlock_timeout)
		return;
	snprintf(value, sizeof(value), "%d", shoal_deadlock_timeout);
	(void) set_config_option("lock_timeout", value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Admission: a transaction that opens blocks on other nodes holds a worker
 * on each of them until it ends, and a fixed pool whose workers are all held
 * by transactions that wait for each other's workers only unwinds through
 * shoal.deadlock_timeout.  So this node lets at most `slots` such
 * transactions run at once (the caller sizes it so that all nodes together
 * cannot fill a pool); the others wait here, as for a lock, which is what
 * a slot is.  A transaction that already holds locks here does not wait
 * (the slot holders may be waiting for it): without a free slot it goes on
 * without one, and the pool's own timeouts are its limit.
 */
void
shoal_xact_admit(int slots, bool wait)
{
	LOCKTAG		tag;

	slots = Max(slots, 1);
	for (int i = 0; i < slots; i++)
	{
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x73686f61, (uint32) i, 8);
		if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
			return;
	}
	if (!wait)
		return;
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x73686f61, (uint32) (MyProcPid % slots), 8);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
deadlock_report(ErrorData *edata)
{
	if (lock_waits_guarded && edata->elevel >= ERROR &&
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE &&
		edata->message_id != NULL &&
		strcmp(edata->message_id, "canceling statement due to lock timeout") == 0)
	{
		edata->sqlerrcode = ERRCODE_T_R_DEADLOCK_DETECTED;
		edata->message = psprintf("possible deadlock across nodes: a lock wait of a distributed "
								  "transaction exceeded shoal.deadlock_timeout (%d ms)",
								  shoal_deadlock_timeout);
		edata->hint = pstrdup("No single node sees a wait cycle that crosses nodes, so shoal "
							  "aborts a transaction that waits this long. Retry it.");
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
xact_callback(XactEvent event, void *arg)
{
	/* an error kept for rethrowing must not outlive its transaction */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		shoal_pgmodule_demote();
		if (shoal_python_started())
			shoal_handlers_release_retired();
		lock_waits_guarded = false;
	}
	if (participants == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			notify("pre_commit", NULL, true);
			break;
		case XACT_EVENT_PRE_PREPARE:
			notify("pre_prepare", gid_args(), true);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			notify("commit", NULL, false);
			forget_participants();
			break;
		case XACT_EVENT_PREPARE:
			notify("prepare", gid_args(), false);
			forget_participants();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			notify("rollback", NULL, false);
			forget_participants();
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
				 void *arg)
{
	int			level;

	if (participants == NULL)
		return;
	level = GetCurrentTransactionNestLevel();
	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			notify("sub_begin", Py_BuildValue("(i)", level), true);
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			notify("sub_commit", Py_BuildValue("(i)", level), false);
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			notify("sub_rollback", Py_BuildValue("(i)", level), false);
			break;
		case SUBXACT_EVENT_PRE_COMMIT_SUB:
			break;
	}
}

void
shoal_xact_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = deadlock_report;
}

/*
 * The decision of a distributed commit: a row of shoal.decided written in
 * the coordinator's transaction, so that it exists if and only if that
 * commits (shoal.transactions.indoubt).  Clients may not write the table:
 * the insert runs as the bootstrap superuser, through a plan kept for the
 * session.
 */
void
shoal_record_decision(const char *gid)
{
	static SPIPlanPtr plan = NULL;
	Datum		value = CStringGetTextDatum(gid);
	Oid			saved_user;
	int			saved_context;

	GetUserIdAndSecContext(&saved_user, &saved_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		/* at pre-commit, the statements are done and no snapshot is active */
		bool		pushed = !ActiveSnapshotSet();

		if (pushed)
			PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "shoal: SPI_connect failed");
		if (plan == NULL)
		{
			Oid			type = TEXTOID;
			SPIPlanPtr	prepared = SPI_prepare("INSERT INTO shoal.decided (gid) VALUES ($1)", 1, &type);

			if (prepared == NULL)
				elog(ERROR, "shoal: cannot prepare the decision's insert: %s",
					 SPI_result_code_string(SPI_result));
			SPI_keepplan(prepared);
			plan = prepared;
		}
		if (SPI_execute_plan(plan, &value, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "shoal: the decision's insert failed");
		SPI_finish();
		if (pushed)
			PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(saved_user, saved_context);
	}
	PG_END_TRY();
}
