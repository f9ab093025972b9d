/*-------------------------------------------------------------------------
 * pgmodule.c
 *		The `_shoal_pg` Python module: what Python code may ask of the backend.
 *
 * Every function here that calls PostgreSQL runs it under PG_TRY.  A
 * PostgreSQL error is caught, kept aside and reported to Python as PgError;
 * when control returns to C the kept error is rethrown, even if Python
 * swallowed the exception.  After such an error every function here refuses
 * to touch the backend, whose state is then only fit for aborting.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include <sys/stat.h>

#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/procsignal.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/wait_event.h"

PyObject   *shoal_exc_query_canceled = NULL;
static PyObject *exc_pg_error = NULL;
static ErrorData *pending_error = NULL;
/* holds pending_error; reset when the next error is kept (ReThrowError copied the last one) */
static MemoryContext kept_error_cxt = NULL;

void
shoal_pgmodule_catch(MemoryContext oldcxt)
{
	ErrorData  *edata;

	if (kept_error_cxt == NULL)
		kept_error_cxt = AllocSetContextCreate(TopMemoryContext, "shoal kept error",
											   ALLOCSET_SMALL_SIZES);
	if (pending_error == NULL)
		MemoryContextReset(kept_error_cxt);
	MemoryContextSwitchTo(kept_error_cxt);
	edata = CopyErrorData();
	FlushErrorState();
	MemoryContextSwitchTo(oldcxt);
	if (pending_error == NULL)
		pending_error = edata;
	else
		FreeErrorData(edata);
	PyErr_SetString(exc_pg_error, pending_error->message ? pending_error->message : "PostgreSQL error");
}

bool
shoal_pgmodule_error_pending(void)
{
	return pending_error != NULL;
}

void
shoal_pgmodule_rethrow(void)
{
	ErrorData  *edata = pending_error;

	Assert(edata != NULL);
	pending_error = NULL;
	PyErr_Clear();
	ReThrowError(edata);
}

/*
 * After Python code returned normally: a PostgreSQL error that it caught
 * (PgError) and swallowed still ends the statement, for the backend is
 * only fit for aborting after it.
 */
void
shoal_pgmodule_check(void)
{
	if (pending_error != NULL)
		shoal_pgmodule_rethrow();
}

/*
 * Where an error cannot be thrown (commit, abort): report the kept error as
 * a WARNING and forget it, so that it does not surface in a later statement.
 */
void
shoal_pgmodule_demote(void)
{
	ErrorData  *edata = pending_error;

	if (edata == NULL)
		return;
	pending_error = NULL;
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg_internal("%s", edata->message ? edata->message : "PostgreSQL error"),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
			 errcontext("a PostgreSQL error that a Python handler caught")));
	FreeErrorData(edata);
}

static bool
refuse_after_error(void)
{
	if (pending_error == NULL)
		return false;
	PyErr_SetString(exc_pg_error, "an earlier PostgreSQL error must be handled first");
	return true;
}

/*
 * check_interrupts(): raise QueryCanceled if the backend has a cancel or
 * termination pending; exit if the postmaster is gone.
 */
static PyObject *
pg_check_interrupts(PyObject *self, PyObject *unused)
{
	/*
	 * As PostgreSQL's own processes do: the loops of shoal's background
	 * workers would otherwise outlive a postmaster killed by the OOM killer,
	 * holding the multiplexer's ports against the next one.
	 */
	if (!PostmasterIsAlive())
		proc_exit(1);

	/*
	 * Signal barriers (DROP DATABASE waits on them) are absorbed here too:
	 * the long-running loops of shoal's background workers call this, and
	 * never reach CHECK_FOR_INTERRUPTS() while they wait for messages.
	 */
	if (ProcSignalBarrierPending)
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		bool		failed = false;

		PG_TRY();
		{
			ProcessProcSignalBarrier();
		}
		PG_CATCH();
		{
			shoal_pgmodule_catch(oldcxt);
			failed = true;
		}
		PG_END_TRY();
		if (failed)
			return NULL;
	}
	if (QueryCancelPending || ProcDiePending)
	{
		PyErr_SetString(shoal_exc_query_canceled,
						ProcDiePending ? "terminating connection" : "canceling statement");
		return NULL;
	}
	Py_RETURN_NONE;
}

/*
 * The wait set of the socket a backend waits on most (its multiplexer's):
 * a fresh one per wait costs epoll_create, epoll_ctl and close each time.
 * It is kept per socket identity (device and inode), because the number of
 * a closed descriptor is reused by the next socket.
 */
static WaitEventSet *socket_wait_set = NULL;
static int	socket_wait_fd = -1;
static bool socket_wait_write = false;
static dev_t socket_wait_dev;
static ino_t socket_wait_ino;

static WaitEventSet *
wait_set_for(int fd, bool write)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return NULL;
	if (socket_wait_set != NULL && fd == socket_wait_fd && write == socket_wait_write &&
		st.st_dev == socket_wait_dev && st.st_ino == socket_wait_ino)
		return socket_wait_set;
	if (socket_wait_set != NULL)
	{
		FreeWaitEventSet(socket_wait_set);
		socket_wait_set = NULL;
	}
	socket_wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(socket_wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(socket_wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(socket_wait_set, write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE, fd,
					  NULL, NULL);
	socket_wait_fd = fd;
	socket_wait_write = write;
	socket_wait_dev = st.st_dev;
	socket_wait_ino = st.st_ino;
	return socket_wait_set;
}

/*
 * wait(fd=-1, timeout=None, write=False) -> bool
 *
 * Sleep on the backend's latch (so cancel, timeouts and postmaster death
 * wake us) and, if given, until fd is readable (or writable).  Returns
 * whether the socket is ready.  Raises QueryCanceled on a pending cancel.
 * The GIL is released meanwhile.
 */
static PyObject *
pg_wait(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"fd", "timeout", "write", NULL};
	int			fd = -1;
	PyObject   *timeout_obj = Py_None;
	int			write = 0;
	long		timeout_ms = -1;
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
	int			rc = 0;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		failed = false;
	PyThreadState *ts;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|iOp", kwlist, &fd, &timeout_obj, &write))
		return NULL;
	if (refuse_after_error())
		return NULL;
	if (timeout_obj != Py_None)
	{
		double		seconds = PyFloat_AsDouble(timeout_obj);

		if (seconds == -1.0 && PyErr_Occurred())
			return NULL;
		timeout_ms = seconds <= 0 ? 0 : (long) (seconds * 1000.0 + 0.999);
		events |= WL_TIMEOUT;
	}
	if (fd >= 0)
		events |= write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE;

	if (pg_check_interrupts(self, NULL) == NULL)
		return NULL;

	ts = PyEval_SaveThread();
	PG_TRY();
	{
		WaitEventSet *set = fd >= 0 ? wait_set_for(fd, write) : NULL;

		if (set != NULL)
		{
			WaitEvent	event;

			rc = WaitEventSetWait(set, timeout_ms, &event, 1, PG_WAIT_EXTENSION) == 0 ?
				WL_TIMEOUT : event.events;
		}
		else
			rc = WaitLatchOrSocket(MyLatch, events, fd, timeout_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);

		/*
		 * Absorb barriers here (DROP DATABASE waits for every backend's): a
		 * handler that keeps waiting may not return to the executor for long.
		 */
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
	}
	PG_CATCH();
	{
		PyEval_RestoreThread(ts);
		shoal_pgmodule_catch(oldcxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	PyEval_RestoreThread(ts);

	if (pg_check_interrupts(self, NULL) == NULL)
		return NULL;
	return PyBool_FromLong((rc & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE)) != 0);
}

/* log(level, message): elog at DEBUG, LOG, INFO, NOTICE or WARNING. */
static PyObject *
pg_log(PyObject *self, PyObject *args)
{
	const char *levelname;
	const char *message;
	int			level;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		failed = false;

	if (!PyArg_ParseTuple(args, "ss", &levelname, &message))
		return NULL;
	if (refuse_after_error())
		return NULL;
	if (pg_strcasecmp(levelname, "debug") == 0)
		level = DEBUG1;
	else if (pg_strcasecmp(levelname, "log") == 0)
		level = LOG;
	else if (pg_strcasecmp(levelname, "info") == 0)
		level = INFO;
	else if (pg_strcasecmp(levelname, "notice") == 0)
		level = NOTICE;
	else if (pg_strcasecmp(levelname, "warning") == 0)
		level = WARNING;
	else
	{
		PyErr_Format(PyExc_ValueError, "unknown log level \"%s\"", levelname);
		return NULL;
	}
	PG_TRY();
	{
		ereport(level, (errmsg_internal("%s", message)));
	}
	PG_CATCH();
	{
		shoal_pgmodule_catch(oldcxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

/*
 * query(sql, *args) -> list of tuples
 *
 * Run one statement through SPI with text arguments ($1, $2, ...: None is
 * NULL, anything else is passed as its str()).  Values come back as Python
 * objects.  Meant for catalog lookups, not for bulk data.
 */
static PyObject *
pg_query(PyObject *self, PyObject *args)
{
	Py_ssize_t	nargs = PyTuple_Size(args);
	const char *sql;
	int			nparams;
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	PyObject   *result = NULL;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		failed = false;

	if (nargs < 1 || !PyUnicode_Check(PyTuple_GET_ITEM(args, 0)))
	{
		PyErr_SetString(PyExc_TypeError, "query(sql, *args) takes the SQL text first");
		return NULL;
	}
	if (refuse_after_error())
		return NULL;
	sql = PyUnicode_AsUTF8(PyTuple_GET_ITEM(args, 0));
	if (sql == NULL)
		return NULL;
	nparams = (int) nargs - 1;
	types = palloc(sizeof(Oid) * (nparams + 1));
	values = palloc(sizeof(Datum) * (nparams + 1));
	nulls = palloc(sizeof(char) * (nparams + 1));
	for (int i = 0; i < nparams; i++)
	{
		PyObject   *arg = PyTuple_GET_ITEM(args, i + 1);

		types[i] = TEXTOID;
		if (arg == Py_None)
		{
			nulls[i] = 'n';
			values[i] = (Datum) 0;
		}
		else
		{
			PyObject   *str = PyObject_Str(arg);
			const char *utf8 = str ? PyUnicode_AsUTF8(str) : NULL;

			if (utf8 == NULL)
			{
				Py_XDECREF(str);
				return NULL;
			}
			nulls[i] = ' ';
			values[i] = CStringGetTextDatum(utf8);
			Py_DECREF(str);
		}
	}

	PG_TRY();
	{
		int			rc;
		bool		pushed = false;

		/* callers at pre-commit (shoal's commit record) run with no snapshot */
		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pushed = true;
		}
		SPI_connect();
		rc = SPI_execute_with_args(sql, nparams, types, values, nulls, false, 0);
		if (rc < 0)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		result = PyList_New(0);
		if (result != NULL && SPI_tuptable != NULL)
		{
			TupleDesc	desc = SPI_tuptable->tupdesc;

			for (uint64 row = 0; row < SPI_processed && result != NULL; row++)
			{
				PyObject   *tuple = PyTuple_New(desc->natts);

				for (int col = 0; tuple != NULL && col < desc->natts; col++)
				{
					bool		isnull;
					Datum		value = SPI_getbinval(SPI_tuptable->vals[row], desc, col + 1, &isnull);
					PyObject   *item = shoal_datum_to_py(value, isnull,
														 TupleDescAttr(desc, col)->atttypid);

					if (item == NULL)
						Py_CLEAR(tuple);
					else
						PyTuple_SET_ITEM(tuple, col, item);
				}
				if (tuple == NULL || PyList_Append(result, tuple) < 0)
					Py_CLEAR(result);
				Py_XDECREF(tuple);
			}
		}
		SPI_finish();
		if (pushed)
			PopActiveSnapshot();
	}
	PG_CATCH();
	{
		Py_CLEAR(result);
		shoal_pgmodule_catch(oldcxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	return result;
}

/* nest_level(): the transaction's nesting depth (1 outside savepoints, 0 outside a transaction). */
static PyObject *
pg_nest_level(PyObject *self, PyObject *unused)
{
	return PyLong_FromLong(GetCurrentTransactionNestLevel());
}

/* current_role(): the role whose privileges the statement runs with (current_user). */
static PyObject *
pg_current_role(PyObject *self, PyObject *unused)
{
	return shoal_cstring_to_py(GetUserNameFromId(GetUserId(), false));
}

/* wrote_locally(): has the transaction a transaction id here (has it written)? */
static PyObject *
pg_wrote_locally(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(IsTransactionState() && TransactionIdIsValid(GetTopTransactionIdIfAny()));
}

/*
 * The transaction and gate calls below share one shape: parse the arguments,
 * call into PostgreSQL, and turn an ERROR into the pending Python exception.
 * TxnCall carries the arguments in and the result out.
 */
typedef struct TxnCall
{
	int			a;				/* slots, or write */
	int			b;				/* wait */
	int			c;				/* session */
	bool		got;
	FullTransactionId fxid;
	const char *text;			/* a gid, a role */
	char	   *out;			/* palloc'd text out, or NULL */
} TxnCall;

/* fn(call), with a PostgreSQL ERROR left as the pending Python exception; false then. */
static bool
txn_call(void (*fn) (TxnCall *), TxnCall *call)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		fn(call);
	}
	PG_CATCH();
	{
		shoal_pgmodule_catch(oldcxt);
		return false;
	}
	PG_END_TRY();
	return true;
}

static void
do_guard_lock_waits(TxnCall *call)
{
	shoal_xact_guard_lock_waits();
}

static void
do_admit(TxnCall *call)
{
	shoal_xact_admit(call->a, call->b);
}

static void
do_record_decision(TxnCall *call)
{
	shoal_record_decision(call->text);
}

static void
do_top_transaction_id(TxnCall *call)
{
	call->fxid = GetTopFullTransactionId();
}

static void
do_gate(TxnCall *call)
{
	call->got = shoal_gate_acquire(call->a, call->b, call->c);
}

static void
do_gate_release(TxnCall *call)
{
	shoal_gate_release(call->a, call->b);
}

/*
 * The password verifier stored for a role, read past pg_authid's privileges:
 * role DDL replays the verifier of the role it has just changed, not the
 * password it was given (shoal.sharding.roles).
 */
static void
do_role_password(TxnCall *call)
{
	HeapTuple	tuple;
	Datum		datum;
	bool		isnull;

	CommandCounterIncrement();	/* the statement that changed it is this transaction's */
	tuple = SearchSysCache1(AUTHNAME, CStringGetDatum(call->text));
	if (!HeapTupleIsValid(tuple))
		return;
	datum = SysCacheGetAttr(AUTHNAME, tuple, Anum_pg_authid_rolpassword, &isnull);
	if (!isnull)
		call->out = TextDatumGetCString(datum);
	ReleaseSysCache(tuple);
}

static void
do_refresh_snapshot(TxnCall *call)
{
	shoal_refresh_snapshot();
}

/* guard_lock_waits(): bound this transaction's lock waits by shoal.deadlock_timeout. */
static PyObject *
pg_guard_lock_waits(PyObject *self, PyObject *unused)
{
	TxnCall		call = {0};

	if (!txn_call(do_guard_lock_waits, &call))
		return NULL;
	Py_RETURN_NONE;
}

/*
 * admit(slots, wait): take one of this node's slots for transactions with
 * remote blocks, waiting for one unless wait is false.
 */
static PyObject *
pg_admit(PyObject *self, PyObject *args)
{
	TxnCall		call = {0};

	if (!PyArg_ParseTuple(args, "ip", &call.a, &call.b) || !txn_call(do_admit, &call))
		return NULL;
	Py_RETURN_NONE;
}

/* role_password(name) -> str | None: the role's stored password verifier. */
static PyObject *
pg_role_password(PyObject *self, PyObject *args)
{
	TxnCall		call = {0};
	PyObject   *result;

	if (!PyArg_ParseTuple(args, "s", &call.text) || !txn_call(do_role_password, &call))
		return NULL;
	if (call.out == NULL)
		Py_RETURN_NONE;
	result = PyUnicode_FromString(call.out);
	pfree(call.out);
	return result;
}

/* record_decision(gid): the distributed commit named gid commits if this transaction does. */
static PyObject *
pg_record_decision(PyObject *self, PyObject *args)
{
	TxnCall		call = {0};

	if (!PyArg_ParseTuple(args, "s", &call.text) || !txn_call(do_record_decision, &call))
		return NULL;
	Py_RETURN_NONE;
}

/* top_transaction_id(): this transaction's full id (assigned now if it has none). */
static PyObject *
pg_top_transaction_id(PyObject *self, PyObject *unused)
{
	TxnCall		call = {0};

	if (!txn_call(do_top_transaction_id, &call))
		return NULL;
	return PyLong_FromUnsignedLongLong(U64FromFullTransactionId(call.fxid));
}

/*
 * gate(write, wait, session) -> bool: take this node's commit gate (see
 * snapshot.c); without wait, False if it is taken in the other mode.
 */
static PyObject *
pg_gate(PyObject *self, PyObject *args)
{
	TxnCall		call = {0};

	if (!PyArg_ParseTuple(args, "ppp", &call.a, &call.b, &call.c) || !txn_call(do_gate, &call))
		return NULL;
	return PyBool_FromLong(call.got);
}

/* gate_release(write, session) */
static PyObject *
pg_gate_release(PyObject *self, PyObject *args)
{
	TxnCall		call = {0};

	if (!PyArg_ParseTuple(args, "pp", &call.a, &call.b) || !txn_call(do_gate_release, &call))
		return NULL;
	Py_RETURN_NONE;
}

/* refresh_snapshot(): the running statement's snapshot becomes current (snapshot.c). */
static PyObject *
pg_refresh_snapshot(PyObject *self, PyObject *unused)
{
	TxnCall		call = {0};

	if (!txn_call(do_refresh_snapshot, &call))
		return NULL;
	Py_RETURN_NONE;
}

/* current_cut(): the cut the scan starting now reads in (0: none). */
static PyObject *
pg_current_cut(PyObject *self, PyObject *unused)
{
	return PyLong_FromLong(shoal_current_cut);
}

/* serializable(): is the transaction SERIALIZABLE? */
static PyObject *
pg_serializable(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(IsolationIsSerializable());
}

/* crash(): end this process at once, as a crash would (shoal.crash_point, tests only). */
static PyObject *
pg_crash(PyObject *self, PyObject *unused)
{
	abort();
	Py_RETURN_NONE;
}

/* in_worker(): True in shoal's multiplexer and workers, which run other nodes' work. */
static PyObject *
pg_in_worker(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(shoal_in_bgworker);
}

/*
 * join_transaction(obj): obj hears of the local transaction's end and
 * savepoints, like a handler whose table the transaction used (begin,
 * pre_commit, commit, rollback, sub_begin...).
 */
static PyObject *
pg_join_transaction(PyObject *self, PyObject *obj)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		failed = false;

	if (refuse_after_error())
		return NULL;
	PG_TRY();
	{
		shoal_xact_touch(obj);
	}
	PG_CATCH();
	{
		shoal_pgmodule_catch(oldcxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

static PyMethodDef pg_methods[] = {
	{"wrote_locally", pg_wrote_locally, METH_NOARGS,
	"True if the transaction has written here (it has a transaction id)."},
	{"guard_lock_waits", pg_guard_lock_waits, METH_NOARGS,
	"Bound this transaction's lock waits here by shoal.deadlock_timeout."},
	{"role_password", pg_role_password, METH_VARARGS,
	"role_password(name) -> str | None: the role's stored password verifier."},
	{"record_decision", pg_record_decision, METH_VARARGS,
	"Record the decision of the distributed commit named gid in this transaction."},
	{"admit", pg_admit, METH_VARARGS,
	"admit(slots, wait): take one of this node's slots for transactions with remote blocks."},
	{"top_transaction_id", pg_top_transaction_id, METH_NOARGS,
	"This transaction's full transaction id (assigned now if it has none)."},
	{"crash", pg_crash, METH_NOARGS, "End the process at once, as a crash would (tests only)."},
	{"gate", pg_gate, METH_VARARGS,
	"gate(write, wait, session) -> bool: take this node's commit gate."},
	{"gate_release", pg_gate_release, METH_VARARGS, "gate_release(write, session)"},
	{"refresh_snapshot", pg_refresh_snapshot, METH_NOARGS,
	"The running statement's snapshot (and a REPEATABLE READ transaction's) becomes current."},
	{"current_cut", pg_current_cut, METH_NOARGS, "The cut the scan starting now reads in (0: none)."},
	{"serializable", pg_serializable, METH_NOARGS, "serializable() -> bool: is the transaction SERIALIZABLE?"},
	{"in_worker", pg_in_worker, METH_NOARGS,
	"True in shoal's multiplexer and workers."},
	{"join_transaction", pg_join_transaction, METH_O,
	"join_transaction(obj): obj hears of the local transaction's end and savepoints."},
	{"current_role", pg_current_role, METH_NOARGS,
	"The name of the current user (whose privileges apply now)."},
	{"nest_level", pg_nest_level, METH_NOARGS,
	"The current transaction nesting level (savepoints add one each)."},
	{"check_interrupts", pg_check_interrupts, METH_NOARGS,
	"Raise QueryCanceled if the backend has a cancel or termination pending."},
	{"wait", (PyCFunction) (void (*) (void)) pg_wait, METH_VARARGS | METH_KEYWORDS,
	"wait(fd=-1, timeout=None, write=False): sleep on the backend latch and a socket."},
	{"log", pg_log, METH_VARARGS, "log(level, message): write to the server log."},
	{"query", pg_query, METH_VARARGS, "query(sql, *args): run SQL through SPI."},
	{"setting", shoal_pg_setting, METH_VARARGS,
	"setting(name): a configuration parameter's value, or None (needs no transaction)."},
	/* jobs.c: for the multiplexer's workers only */
	{"execute", (PyCFunction) (void (*) (void)) shoal_job_execute, METH_VARARGS | METH_KEYWORDS,
	"execute(sql, param_types, params, binary_params, role, sink, chunk_bytes=65536, max_rows=0, "
	"cache=True) -> (command_tag, rows): run a job, rows to sink as binary COPY tuple data."},
	{"begin", (PyCFunction) (void (*) (void)) shoal_job_begin, METH_VARARGS | METH_KEYWORDS,
	"begin(isolation='read committed', read_only=False): open a transaction block."},
	{"commit", (PyCFunction) (void (*) (void)) shoal_job_commit, METH_VARARGS | METH_KEYWORDS,
	"commit(role=None) -> bool: end the block; False if it had failed and was rolled back."},
	{"rollback", shoal_job_rollback, METH_NOARGS, "rollback(): end the block, if any."},
	{"savepoint", shoal_job_savepoint, METH_VARARGS, "savepoint(name)"},
	{"release", shoal_job_release, METH_VARARGS, "release(name): RELEASE SAVEPOINT."},
	{"rollback_to", shoal_job_rollback_to, METH_VARARGS, "rollback_to(name): ROLLBACK TO SAVEPOINT."},
	{"prepare", (PyCFunction) (void (*) (void)) shoal_job_prepare, METH_VARARGS | METH_KEYWORDS,
	"prepare(gid, role=None) -> bool: PREPARE TRANSACTION; False if the block had failed."},
	{"commit_prepared", shoal_job_commit_prepared, METH_VARARGS, "commit_prepared(gid)"},
	{"rollback_prepared", shoal_job_rollback_prepared, METH_VARARGS, "rollback_prepared(gid)"},
	{"in_block", shoal_job_in_block, METH_NOARGS, "in_block() -> bool: a transaction block is open."},
	{"block_failed", shoal_job_block_failed, METH_NOARGS,
	"block_failed() -> bool: the block is aborted (only rollback or rollback_to help)."},
	{"hold_snapshot", shoal_job_hold_snapshot, METH_NOARGS,
	"hold_snapshot(): take a snapshot now, for execute(..., held_snapshot=True)."},
	{"drop_snapshot", shoal_job_drop_snapshot, METH_NOARGS,
	"drop_snapshot(): forget the held snapshot, if any."},
	{"clear_cancel", shoal_job_clear_cancel, METH_NOARGS,
	"clear_cancel() -> bool: forget a pending cancel; returns whether there was one."},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef pg_module = {
	PyModuleDef_HEAD_INIT, "_shoal_pg",
	"The backend that hosts this interpreter (provided by the shoal extension).",
	-1, pg_methods
};

PyObject *
PyInit__shoal_pg(void)
{
	PyObject   *mod = PyModule_Create(&pg_module);

	if (mod == NULL)
		return NULL;
	/* A BaseException, so that `except Exception` in handler code does not swallow a cancel. */
	shoal_exc_query_canceled = PyErr_NewExceptionWithDoc("_shoal_pg.QueryCanceled",
														 "The query was canceled or timed out.",
														 PyExc_BaseException, NULL);
	exc_pg_error = PyErr_NewExceptionWithDoc("_shoal_pg.PgError",
											 "PostgreSQL raised an error; it is reported when "
											 "control returns to the backend.",
											 PyExc_Exception, NULL);
	if (shoal_exc_query_canceled == NULL || exc_pg_error == NULL ||
		PyModule_AddObjectRef(mod, "QueryCanceled", shoal_exc_query_canceled) < 0 ||
		PyModule_AddObjectRef(mod, "PgError", exc_pg_error) < 0 ||
		shoal_jobs_module_init(mod) < 0)
	{
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}
