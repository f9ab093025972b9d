/*-------------------------------------------------------------------------
 * pyhost.c
 *		The embedded CPython: starting it, calling into it, and turning its
 *		exceptions into PostgreSQL errors.
 *
 * The postmaster starts the interpreter and imports shoal's modules when
 * the library is preloaded, so that every backend inherits them ready
 * (starting them costs a session's first shoal statement over 100 ms of
 * CPU, which 64 new clients at once pay together); a backend finishes the
 * setup on first use, or starts its own interpreter if there is none.  The
 * backend's thread holds the GIL from then on, except while it waits (see
 * pgmodule.c).  No
 * PostgreSQL error ever unwinds through Python frames: C calls into Python
 * return normally and a pending exception is converted here, after the
 * Python stack has unwound.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include <signal.h>

#include "miscadmin.h"
#include "utils/elog.h"

static bool python_started = false;	/* the interpreter exists, maybe inherited */
static bool python_ready = false;	/* ... and this process has set it up */
static bool python_failed = false;

/* What the postmaster imports for its children: the modules every backend's first query needs. */
static const char *const preloaded_modules[] = {"shoal.fdw.host", "shoal.fdw.remote"};

/* PostgreSQL's SIGINT and SIGTERM handlers, chained from ours. */
static void (*pg_sigint_handler) (int) = NULL;
static void (*pg_sigterm_handler) (int) = NULL;

/*
 * SIGINT (cancel, and statement_timeout, which signals the backend itself)
 * must also interrupt Python code that is blocked in a system call: after
 * PostgreSQL's handler set its flags, trip Python's own SIGINT, whose
 * Python-level handler raises QueryCanceled when the backend has a cancel
 * pending.  PyErr_SetInterruptEx is async-signal-safe.
 */
static void
shoal_sigint(int signo)
{
	int			save_errno = errno;

	if (pg_sigint_handler != NULL)
		pg_sigint_handler(signo);
	PyErr_SetInterruptEx(SIGINT);
	errno = save_errno;
}

/*
 * SIGTERM (pg_terminate_backend, a fast or immediate shutdown) likewise:
 * Python retries a system call that a signal without a Python handler
 * interrupted (PEP 475), so a handler in time.sleep() would keep the
 * backend alive, and a fast shutdown waiting, until it woke up by itself.
 * The Python-level handler raises QueryCanceled for a pending termination
 * too, and the backend then exits as PostgreSQL's die() asked.
 */
static void
shoal_sigterm(int signo)
{
	int			save_errno = errno;

	if (pg_sigterm_handler != NULL)
		pg_sigterm_handler(signo);
	PyErr_SetInterruptEx(SIGINT);
	errno = save_errno;
}

static void (*
			 current_handler(int signo)) (int)
{
	struct sigaction old;

	if (sigaction(signo, NULL, &old) == 0 &&
		old.sa_handler != SIG_IGN && old.sa_handler != SIG_DFL)
		return old.sa_handler;
	return NULL;
}

static void
install_interrupt_handler(void)
{
	PyObject   *result;

	pg_sigint_handler = current_handler(SIGINT);
	pg_sigterm_handler = current_handler(SIGTERM);

	/* Registers the Python-level handler (and, as a side effect, Python's C handler) */
	result = shoal_call_method(shoal_host_attr("interrupts"), "install", NULL);
	Py_DECREF(result);

	/* ... which ours replaces at the C level, chaining to PostgreSQL's. */
	pqsignal(SIGINT, shoal_sigint);
	/* only where the process has a SIGTERM handler of its own to chain to */
	if (pg_sigterm_handler != NULL)
		pqsignal(SIGTERM, shoal_sigterm);
}

bool
shoal_python_started(void)
{
	return python_ready;
}

static void
add_python_path(void)
{
	PyObject   *sys_path;
	char	   *copy;
	char	   *dir;
	char	   *saveptr = NULL;
	Py_ssize_t	position = 0;

	if (shoal_python_path == NULL || shoal_python_path[0] == '\0')
		return;
	sys_path = PySys_GetObject("path");	/* borrowed */
	if (sys_path == NULL)
		return;
	copy = pstrdup(shoal_python_path);
	for (dir = strtok_r(copy, ":", &saveptr); dir; dir = strtok_r(NULL, ":", &saveptr))
	{
		PyObject   *entry = PyUnicode_DecodeFSDefault(dir);

		if (entry == NULL || PyList_Insert(sys_path, position++, entry) < 0)
		{
			Py_XDECREF(entry);
			shoal_python_raise("adding shoal.python_path to sys.path");
		}
		Py_DECREF(entry);
	}
	pfree(copy);
}

/* Start the interpreter; NULL, or what went wrong (no PostgreSQL error: the postmaster calls it). */
static const char *
start_interpreter(void)
{
	PyPreConfig preconfig;
	PyConfig	config;
	PyStatus	status;

	/*
	 * The backend owns the locale: Python must not call setlocale().  UTF-8
	 * mode gives Python a sane file-system encoding whatever LC_CTYPE is.
	 */
	PyPreConfig_InitIsolatedConfig(&preconfig);
	preconfig.configure_locale = 0;
	preconfig.utf8_mode = 1;
	status = Py_PreInitialize(&preconfig);
	if (PyStatus_Exception(status))
		return status.err_msg ? status.err_msg : "could not pre-initialize Python";

	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 0;
	config.site_import = 1;
	config.parse_argv = 0;
	config.write_bytecode = 0;
	config.buffered_stdio = 0;
	/* The venv's python: getpath finds its pyvenv.cfg and the venv's site-packages. */
	status = PyConfig_SetBytesString(&config, &config.program_name, shoal_python_executable);
	if (!PyStatus_Exception(status))
		status = PyConfig_SetBytesString(&config, &config.executable, shoal_python_executable);
	if (!PyStatus_Exception(status) &&
		PyImport_AppendInittab("_shoal_pg", PyInit__shoal_pg) != 0)
		status = PyStatus_Error("could not register module _shoal_pg");
	if (!PyStatus_Exception(status))
		status = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	if (PyStatus_Exception(status))
		return status.err_msg ? status.err_msg : "unknown error";
	python_started = true;
	return NULL;
}

/*
 * In the postmaster (shared_preload_libraries): the interpreter and shoal's
 * modules, for the children to inherit.  A failure is only a WARNING: each
 * backend then tries again for itself and reports the error to its client.
 */
void
shoal_python_preload(void)
{
	const char *failure = start_interpreter();

	if (failure != NULL)
	{
		ereport(WARNING,
				(errmsg("shoal: could not start Python in the postmaster: %s", failure),
				 errdetail("Each session starts its own interpreter instead.")));
		return;
	}
	for (int i = 0; i < lengthof(preloaded_modules); i++)
	{
		PyObject   *mod = PyImport_ImportModule(preloaded_modules[i]);

		if (mod == NULL)
		{
			ereport(WARNING,
					(errmsg("shoal: could not import %s in the postmaster", preloaded_modules[i]),
					 errdetail("Sessions import it when they need it, and report the error then.")));
			PyErr_Clear();
			continue;
		}
		Py_DECREF(mod);
	}
}

void
shoal_python_ensure(void)
{
	const char *failure;

	if (python_ready)
		return;
	if (python_failed)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("the embedded Python interpreter failed to start earlier in this session")));

	if (python_started)
		PyOS_AfterFork_Child();	/* the postmaster's: locks, threads, at-fork hooks (random) */
	else if ((failure = start_interpreter()) != NULL)
	{
		python_failed = true;
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not start the embedded Python interpreter: %s", failure),
				 errhint("Check shoal.python_executable (now \"%s\"): it should be the python of "
						 "the environment where shoal is installed.", shoal_python_executable)));
	}
	python_ready = true;

	add_python_path();
	install_interrupt_handler();
}

/*
 * Import module.attr; a new reference, or an ERROR.
 */
PyObject *
shoal_import_attr(const char *module, const char *attr)
{
	PyObject   *mod;
	PyObject   *result;

	shoal_python_ensure();
	mod = PyImport_ImportModule(module);
	if (mod == NULL)
		shoal_python_raise(psprintf("importing %s", module));
	result = PyObject_GetAttrString(mod, attr);
	Py_DECREF(mod);
	if (result == NULL)
		shoal_python_raise(psprintf("importing %s.%s", module, attr));
	return result;
}

/*
 * An attribute of shoal.fdw.host, the Python side of this bridge; borrowed,
 * and cached for the life of the backend.
 */
PyObject *
shoal_host_attr(const char *attr)
{
	static PyObject *host = NULL;
	PyObject   *result;

	if (host == NULL)
	{
		PyObject   *mod;

		shoal_python_ensure();
		mod = PyImport_ImportModule("shoal.fdw.host");
		if (mod == NULL)
			shoal_python_raise("importing shoal.fdw.host");
		host = mod;
	}
	result = PyObject_GetAttrString(host, attr);
	if (result == NULL)
		shoal_python_raise(psprintf("shoal.fdw.host.%s", attr));
	Py_DECREF(result);			/* the module keeps it alive */
	return result;
}

/*
 * obj.method(*args, **kwargs): a new reference, or an ERROR.
 *
 * Steals the references to args and kwargs (either may be NULL: no
 * arguments), so that callers pass Py_BuildValue(...) straight in without
 * leaking the tuple on any path, the error paths included.  A NULL args or
 * kwargs with an exception set is a failed Py_BuildValue: reported as such.
 */
PyObject *
shoal_call_method_kw(PyObject *obj, const char *method, PyObject *args, PyObject *kwargs)
{
	PyObject   *callable;
	PyObject   *result;

	if ((args == NULL || kwargs == NULL) && PyErr_Occurred())
	{
		Py_XDECREF(args);
		Py_XDECREF(kwargs);
		shoal_python_raise(method);
	}
	callable = PyObject_GetAttrString(obj, method);
	if (callable == NULL)
	{
		Py_XDECREF(args);
		Py_XDECREF(kwargs);
		shoal_python_raise(method);
	}
	if (args == NULL && kwargs == NULL)
		result = PyObject_CallNoArgs(callable);
	else
	{
		if (args == NULL)
			args = PyTuple_New(0);
		result = args ? PyObject_Call(callable, args, kwargs) : NULL;
	}
	Py_DECREF(callable);
	Py_XDECREF(args);
	Py_XDECREF(kwargs);
	if (shoal_pgmodule_error_pending())
	{
		/* Python went on after a PostgreSQL error in a callback: that error wins. */
		Py_XDECREF(result);
		shoal_pgmodule_rethrow();
	}
	if (result == NULL)
		shoal_python_raise(method);
	return result;
}

PyObject *
shoal_call_method(PyObject *obj, const char *method, PyObject *args)
{
	return shoal_call_method_kw(obj, method, args, NULL);
}

/*
 * The next item of a handler's iterator (a new reference), or NULL at its
 * end; an ERROR if it raised, or if the handler caught a PostgreSQL error
 * and went on (it still counts).  context names the handler method.
 */
PyObject *
shoal_iter_next(PyObject *iterator, const char *context)
{
	PyObject   *item;

	CHECK_FOR_INTERRUPTS();
	item = PyIter_Next(iterator);
	if (shoal_pgmodule_error_pending())
	{
		Py_XDECREF(item);
		shoal_pgmodule_rethrow();
	}
	if (item == NULL && PyErr_Occurred())
		shoal_python_raise(context);
	return item;
}

/*
 * Render the pending exception: message, SQLSTATE, traceback.  Clears it.
 */
typedef struct PythonError
{
	char	   *message;
	char	   *detail;
	char	   *hint;
	int			sqlerrcode;
	bool		canceled;
} PythonError;

static char *
py_str_to_cstring(PyObject *obj)
{
	PyObject   *str = obj ? PyObject_Str(obj) : NULL;
	const char *utf8;
	char	   *result = NULL;

	if (str != NULL && (utf8 = PyUnicode_AsUTF8(str)) != NULL)
		result = pstrdup(utf8);
	Py_XDECREF(str);
	PyErr_Clear();
	return result;
}

static void
fetch_python_error(PythonError *err)
{
	PyObject   *type,
			   *value,
			   *tb;

	memset(err, 0, sizeof(*err));
	err->sqlerrcode = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;

	PyErr_Fetch(&type, &value, &tb);
	if (type == NULL)
	{
		err->message = pstrdup("Python call failed without an exception");
		return;
	}
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb != NULL && value != NULL)
		PyException_SetTraceback(value, tb);

	if (shoal_exc_query_canceled != NULL &&
		PyErr_GivenExceptionMatches(type, shoal_exc_query_canceled))
		err->canceled = true;
	else
	{
		/* Python decides how an exception reads as an ERROR (shoal.fdw.host.describe_exception). */
		PyObject   *host = PyImport_ImportModule("shoal.fdw.host");
		PyObject   *described = host ? PyObject_CallMethod(host, "describe_exception", "O",
														   value ? value : Py_None) : NULL;
		PyObject   *message, *sqlstate, *detail, *hint;

		if (described != NULL && PyTuple_Check(described) && PyTuple_GET_SIZE(described) == 4)
		{
			message = PyTuple_GET_ITEM(described, 0);
			sqlstate = PyTuple_GET_ITEM(described, 1);
			detail = PyTuple_GET_ITEM(described, 2);
			hint = PyTuple_GET_ITEM(described, 3);
			err->message = py_str_to_cstring(message);
			if (sqlstate != Py_None)
			{
				const char *code = PyUnicode_Check(sqlstate) ? PyUnicode_AsUTF8(sqlstate) : NULL;

				if (code && strlen(code) == 5)
					err->sqlerrcode = MAKE_SQLSTATE(code[0], code[1], code[2], code[3], code[4]);
			}
			err->detail = detail != Py_None ? py_str_to_cstring(detail) : NULL;
			err->hint = hint != Py_None ? py_str_to_cstring(hint) : NULL;
		}
		else
		{
			/* describing failed (the host module itself is broken): say what we can */
			char	   *msg = py_str_to_cstring(value);
			const char *tname = ((PyTypeObject *) type)->tp_name;

			err->message = (msg && msg[0]) ? psprintf("%s: %s", tname, msg) : pstrdup(tname);
		}
		if (err->message == NULL)
			err->message = pstrdup(((PyTypeObject *) type)->tp_name);
		Py_XDECREF(described);
		Py_XDECREF(host);
		PyErr_Clear();
	}
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

void
shoal_python_raise(const char *context)
{
	PythonError err;

	if (shoal_pgmodule_error_pending())
		shoal_pgmodule_rethrow();
	fetch_python_error(&err);
	if (err.canceled)
	{
		/* Let PostgreSQL report the cancel or timeout in its own words. */
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("canceling statement due to user request")));
	}
	ereport(ERROR,
			(errcode(err.sqlerrcode),
			 errmsg_internal("%s", err.message),
			 err.detail ? errdetail_internal("%s", err.detail) : 0,
			 err.hint ? errhint("%s", err.hint) : 0,
			 context ? errcontext("Python: %s", context) : 0));
	pg_unreachable();
}

void
shoal_python_warn(const char *context)
{
	PythonError err;

	shoal_pgmodule_demote();
	fetch_python_error(&err);
	if (err.canceled)
		return;
	ereport(WARNING,
			(errcode(err.sqlerrcode),
			 errmsg_internal("%s", err.message),
			 err.detail ? errdetail_internal("%s", err.detail) : 0,
			 context ? errcontext("Python: %s", context) : 0));
}
