/*-------------------------------------------------------------------------
 * jobs.c
 *		Remote jobs: what a multiplexer worker executes for other nodes,
 *		as functions of the `_shoal_pg` module.
 *
 * A worker (bgworker.c) is a process with no client: its Python loop takes
 * jobs from the multiplexer and calls execute() for each statement, and the
 * transaction-block functions (begin, savepoint, commit, prepare...) while
 * a remote transaction sticks to it.  They drive xact.c the way PostgresMain
 * and standard_ProcessUtility do for the corresponding SQL, so a worker's
 * transaction block behaves like a psql session's.
 *
 * Unlike the backend bridge of pgmodule.c, which keeps a PostgreSQL error
 * pending until control returns to the backend, errors here are handled
 * completely: the statement's transaction (or, in a block, the current
 * subtransaction) is aborted as PostgresMain would after a failed statement,
 * and Python gets a JobError describing it.  The worker goes on with its
 * next job.
 *
 * Results are never turned into Python objects: a DestReceiver writes the
 * rows as PostgreSQL binary COPY tuple data, which the multiplexers pass
 * through untouched to the node that asked, in chunks handed to a Python
 * callable (the sink).
 *
 * Plans are prepared once per worker and statement (SPI_keepplan), so a
 * point query repeated by many sessions of other nodes is parsed and planned
 * once per worker; plancache.c replans when the catalog changes.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "pgstat.h"
#include "port/pg_bswap.h"
#include "storage/proc.h"
#include "tcop/cmdtag.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"

/* How many prepared statements a worker keeps (least recently used go first). */
#define JOB_PLAN_CACHE_SIZE 512

static PyObject *exc_job_error = NULL;

/* Per-call allocations outside transactions; reset by each execute(). */
static MemoryContext job_context = NULL;

/* A job is running: its sink must not start another. */
static bool job_running = false;

/* ---------------------------------------------------------------------
 * The plan cache: (parameter types, SQL) -> kept SPI plan.
 * ---------------------------------------------------------------------
 */

/* Points at nargs, the parameter type OIDs and the SQL text, back to back. */
typedef struct JobPlanKey
{
	const char *data;
	Size		len;
} JobPlanKey;

/* How one parameter is decoded, set up on first use. */
typedef struct JobParamIO
{
	Oid			type;
	Oid			ioparam;
	bool		have_in;
	bool		have_recv;
	FmgrInfo	infunc;
	FmgrInfo	recvfunc;
} JobParamIO;

typedef struct JobPlan
{
	JobPlanKey	key;			/* hash key: must be first */
	SPIPlanPtr	plan;
	MemoryContext cxt;			/* the key's copy and the parameters' I/O */
	int			nargs;
	JobParamIO *params;
	dlist_node	lru;			/* most recently used first */
} JobPlan;

static HTAB *plan_cache = NULL;
static dlist_head plan_lru = DLIST_STATIC_INIT(plan_lru);
static StringInfoData key_buf;

static uint32
plan_key_hash(const void *key, Size keysize)
{
	const JobPlanKey *k = key;

	return hash_bytes((const unsigned char *) k->data, (int) k->len);
}

static int
plan_key_match(const void *a, const void *b, Size keysize)
{
	const JobPlanKey *ka = a;
	const JobPlanKey *kb = b;

	return (ka->len == kb->len && memcmp(ka->data, kb->data, ka->len) == 0) ? 0 : 1;
}

static void
init_job_state(void)
{
	HASHCTL		ctl;

	if (job_context != NULL)
		return;
	job_context = AllocSetContextCreate(TopMemoryContext, "shoal job", ALLOCSET_DEFAULT_SIZES);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(JobPlanKey);
	ctl.entrysize = sizeof(JobPlan);
	ctl.hash = plan_key_hash;
	ctl.match = plan_key_match;
	ctl.hcxt = TopMemoryContext;
	plan_cache = hash_create("shoal job plans", JOB_PLAN_CACHE_SIZE, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);

	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&key_buf);
		MemoryContextSwitchTo(old);
	}
}

static void
evict_plan(void)
{
	JobPlan    *victim = dlist_container(JobPlan, lru, dlist_tail_node(&plan_lru));
	JobPlan		copy = *victim;

	dlist_delete(&victim->lru);
	/* remove before freeing: matching reads the key's text */
	hash_search(plan_cache, &copy.key, HASH_REMOVE, NULL);
	SPI_freeplan(copy.plan);
	MemoryContextDelete(copy.cxt);
}

/* ---------------------------------------------------------------------
 * One call of execute(): its arguments, converted before any PostgreSQL
 * code runs, and the state its error cleanup needs.
 * ---------------------------------------------------------------------
 */
typedef struct JobDest JobDest;

typedef struct JobCall
{
	const char *sql;
	int			nargs;
	Oid		   *types;			/* as given: 0 = infer */
	const char **values;		/* NULL for SQL NULL; NUL-terminated */
	int		   *lengths;
	bool	   *binary;
	bool	   *from_str;		/* a Python str: UTF-8, to convert if the database is not */
	const char *role;
	PyObject   *sink;			/* borrowed; NULL to discard rows */
	int			chunk_bytes;
	uint64		max_rows;
	bool		cache;
	bool		held_snapshot;	/* run on the snapshot hold_snapshot() took */

	/* results */
	char		tag[64];
	uint64		processed;

	/* for the cleanup after an error */
	bool		role_switched;
	Oid			save_userid;
	int			save_sec_context;
	JobDest    *dest;
} JobCall;

/* ---------------------------------------------------------------------
 * A snapshot held in a READ COMMITTED block for one statement of the asking
 * node that reads a cut (shoal.transactions.snapshots): taken while the
 * worker holds this node's gate, it serves that statement's reads here,
 * which would otherwise each take a snapshot of their own.
 * ---------------------------------------------------------------------
 */
static Snapshot held_snapshot = NULL;
static LocalTransactionId held_lxid = InvalidLocalTransactionId;

static bool
snapshot_is_held(void)
{
	return held_snapshot != NULL && held_lxid == MyProc->lxid;
}

/* An abort releases it by itself; commit and prepare drop it first (a commit warns of a leak). */
static void
drop_held_snapshot(void)
{
	if (snapshot_is_held() && IsTransactionState())
		UnregisterSnapshotFromOwner(held_snapshot, TopTransactionResourceOwner);
	held_snapshot = NULL;
}

/* ---------------------------------------------------------------------
 * The DestReceiver: rows as binary COPY tuple data, in chunks to the sink.
 * ---------------------------------------------------------------------
 */
typedef enum JobColKind
{
	COL_SEND,					/* the type's send function */
	COL_BOOL,
	COL_INT2,
	COL_INT4,					/* also oid, date */
	COL_INT8,					/* also timestamp[tz], time */
	COL_FLOAT4,
	COL_FLOAT8,
	COL_TEXT,					/* text, varchar, bpchar, json: textsend */
	COL_NAME,
	COL_BYTEA,
	COL_UUID
} JobColKind;

typedef struct JobCol
{
	JobColKind	kind;
	FmgrInfo	sendfunc;
} JobCol;

struct JobDest
{
	DestReceiver pub;
	StringInfoData buf;
	PyObject   *sink;
	int			chunk_bytes;
	int			natts;
	JobCol	   *cols;
	MemoryContext tuplecxt;		/* per tuple: send functions' output, detoasted values */
	/* the sink's exception, kept while PostgreSQL unwinds, re-raised as is */
	PyObject   *exc_type;
	PyObject   *exc_value;
	PyObject   *exc_tb;
};

/*
 * Hand what is buffered to the sink.  The sink is Python: it runs with the
 * GIL, which this thread holds throughout.  If it raises, its exception is
 * kept for execute() to re-raise and the statement fails with an ERROR, so
 * that PostgreSQL unwinds and aborts cleanly.
 */
static void
dest_flush(JobDest *dest)
{
	PyObject   *chunk;
	PyObject   *result;

	if (dest->buf.len == 0)
		return;
	if (dest->sink == NULL)
	{
		resetStringInfo(&dest->buf);
		return;
	}
	chunk = PyBytes_FromStringAndSize(dest->buf.data, dest->buf.len);
	resetStringInfo(&dest->buf);
	result = chunk ? PyObject_CallOneArg(dest->sink, chunk) : NULL;
	Py_XDECREF(chunk);

	/* A PostgreSQL error in a _shoal_pg call the sink made wins, as in the backend bridge. */
	if (shoal_pgmodule_error_pending())
	{
		Py_XDECREF(result);
		shoal_pgmodule_rethrow();
	}
	if (result == NULL)
	{
		char	   *message = NULL;
		PyObject   *str;

		PyErr_Fetch(&dest->exc_type, &dest->exc_value, &dest->exc_tb);
		PyErr_NormalizeException(&dest->exc_type, &dest->exc_value, &dest->exc_tb);
		if (dest->exc_tb != NULL && dest->exc_value != NULL)
			PyException_SetTraceback(dest->exc_value, dest->exc_tb);
		str = dest->exc_value ? PyObject_Str(dest->exc_value) : NULL;
		if (str != NULL && PyUnicode_Check(str))
		{
			const char *utf8 = PyUnicode_AsUTF8(str);

			if (utf8)
				message = psprintf("%s: %s", Py_TYPE(dest->exc_value)->tp_name, utf8);
		}
		Py_XDECREF(str);
		PyErr_Clear();
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("the result sink of a shoal job failed: %s",
						message ? message : "unknown Python error")));
	}
	Py_DECREF(result);
}

static void
dest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	JobDest    *dest = (JobDest *) self;
	int			client_enc = pg_get_client_encoding();
	bool		raw_text = (client_enc == GetDatabaseEncoding() || client_enc == PG_SQL_ASCII);
	MemoryContext old = MemoryContextSwitchTo(job_context);

	dest->natts = typeinfo->natts;
	dest->cols = palloc0(sizeof(JobCol) * Max(dest->natts, 1));
	for (int i = 0; i < dest->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(typeinfo, i);
		JobCol	   *col = &dest->cols[i];

		switch (att->atttypid)
		{
			case BOOLOID:
				col->kind = COL_BOOL;
				break;
			case INT2OID:
				col->kind = COL_INT2;
				break;
			case INT4OID:
			case OIDOID:
			case DATEOID:
				col->kind = COL_INT4;
				break;
			case INT8OID:
			case TIMESTAMPOID:
			case TIMESTAMPTZOID:
			case TIMEOID:
				col->kind = COL_INT8;
				break;
			case FLOAT4OID:
				col->kind = COL_FLOAT4;
				break;
			case FLOAT8OID:
				col->kind = COL_FLOAT8;
				break;
			case TEXTOID:
			case VARCHAROID:
			case BPCHAROID:
			case JSONOID:
				/* textsend converts to the client encoding: only copy when that is a no-op */
				col->kind = raw_text ? COL_TEXT : COL_SEND;
				break;
			case NAMEOID:
				col->kind = raw_text ? COL_NAME : COL_SEND;
				break;
			case BYTEAOID:
				col->kind = COL_BYTEA;
				break;
			case UUIDOID:
				col->kind = COL_UUID;
				break;
			default:
				col->kind = COL_SEND;
				break;
		}
		if (col->kind == COL_SEND)
		{
			Oid			func;
			bool		isvarlena;

			getTypeBinaryOutputInfo(att->atttypid, &func, &isvarlena);
			fmgr_info_cxt(func, &col->sendfunc, job_context);
		}
	}
	MemoryContextSwitchTo(old);
}

static inline void
put_int16(StringInfo buf, int16 v)
{
	uint16		n = pg_hton16((uint16) v);

	appendBinaryStringInfoNT(buf, (char *) &n, 2);
}

static inline void
put_int32(StringInfo buf, int32 v)
{
	uint32		n = pg_hton32((uint32) v);

	appendBinaryStringInfoNT(buf, (char *) &n, 4);
}

static inline void
put_int64(StringInfo buf, int64 v)
{
	uint64		n = pg_hton64((uint64) v);

	appendBinaryStringInfoNT(buf, (char *) &n, 8);
}

static inline void
put_field(StringInfo buf, const char *data, int len)
{
	put_int32(buf, len);
	appendBinaryStringInfoNT(buf, data, len);
}

/*
 * One row, exactly as COPY ... TO STDOUT (FORMAT binary) writes it: int16
 * field count, then per field int32 length (-1 for NULL) and the send
 * function's output.
 */
static bool
dest_receive(TupleTableSlot *slot, DestReceiver *self)
{
	JobDest    *dest = (JobDest *) self;
	StringInfo	buf = &dest->buf;
	MemoryContext old;
	int			natts = dest->natts;

	if (dest->sink == NULL)
		return true;			/* rows discarded: only counted */
	old = MemoryContextSwitchTo(dest->tuplecxt);
	slot_getallattrs(slot);
	put_int16(buf, (int16) natts);
	for (int i = 0; i < natts; i++)
	{
		Datum		value = slot->tts_values[i];

		if (slot->tts_isnull[i])
		{
			put_int32(buf, -1);
			continue;
		}
		switch (dest->cols[i].kind)
		{
			case COL_BOOL:
				{
					char		b = DatumGetBool(value) ? 1 : 0;

					put_field(buf, &b, 1);
				}
				break;
			case COL_INT2:
				put_int32(buf, 2);
				put_int16(buf, DatumGetInt16(value));
				break;
			case COL_INT4:
				put_int32(buf, 4);
				put_int32(buf, DatumGetInt32(value));
				break;
			case COL_INT8:
				put_int32(buf, 8);
				put_int64(buf, DatumGetInt64(value));
				break;
			case COL_FLOAT4:
				{
					union
					{
						float4		f;
						int32		i;
					}			u;

					u.f = DatumGetFloat4(value);
					put_int32(buf, 4);
					put_int32(buf, u.i);
				}
				break;
			case COL_FLOAT8:
				{
					union
					{
						float8		f;
						int64		i;
					}			u;

					u.f = DatumGetFloat8(value);
					put_int32(buf, 8);
					put_int64(buf, u.i);
				}
				break;
			case COL_TEXT:
			case COL_BYTEA:
				{
					struct varlena *v = PG_DETOAST_DATUM_PACKED(value);

					put_field(buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
				}
				break;
			case COL_NAME:
				{
					const char *s = NameStr(*DatumGetName(value));

					put_field(buf, s, strlen(s));
				}
				break;
			case COL_UUID:
				put_field(buf, (const char *) DatumGetPointer(value), 16);
				break;
			case COL_SEND:
				{
					bytea	   *out = SendFunctionCall(&dest->cols[i].sendfunc, value);

					put_field(buf, VARDATA(out), VARSIZE(out) - VARHDRSZ);
				}
				break;
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(dest->tuplecxt);

	if (buf->len >= dest->chunk_bytes)
		dest_flush(dest);
	return true;
}

static void
dest_shutdown(DestReceiver *self)
{
	/* the rows of all the statements go out together: execute() flushes at the end */
}

static void
dest_destroy(DestReceiver *self)
{
}

static JobDest *
make_dest(PyObject *sink, int chunk_bytes)
{
	JobDest    *dest = MemoryContextAllocZero(job_context, sizeof(JobDest));
	MemoryContext old;

	dest->pub.receiveSlot = dest_receive;
	dest->pub.rStartup = dest_startup;
	dest->pub.rShutdown = dest_shutdown;
	dest->pub.rDestroy = dest_destroy;
	/* as plpgsql's RETURN QUERY does: any kind but DestSPI and DestNone gets the rows */
	dest->pub.mydest = DestTuplestore;
	dest->sink = sink;
	dest->chunk_bytes = chunk_bytes;
	dest->tuplecxt = AllocSetContextCreate(job_context, "shoal job tuple", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(job_context);
	initStringInfo(&dest->buf);
	MemoryContextSwitchTo(old);
	return dest;
}

/* ---------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------
 */

static int
set_attr_str(PyObject *obj, const char *name, const char *value)
{
	PyObject   *v = value ? shoal_cstring_to_py(value) : Py_NewRef(Py_None);
	int			rc;

	if (v == NULL)
		return -1;
	rc = PyObject_SetAttrString(obj, name, v);
	Py_DECREF(v);
	return rc;
}

/* Raise JobError(message) with its attributes; sets a Python exception in any case. */
static void
raise_job_error(const char *sqlstate, const char *message, const char *detail,
				const char *hint, const char *context, int position)
{
	PyObject   *msg = shoal_cstring_to_py(message ? message : "unknown error");
	PyObject   *exc;

	if (msg == NULL)
		return;
	exc = PyObject_CallOneArg(exc_job_error, msg);
	Py_DECREF(msg);
	if (exc == NULL)
		return;
	if (set_attr_str(exc, "sqlstate", sqlstate) < 0 ||
		set_attr_str(exc, "message", message) < 0 ||
		set_attr_str(exc, "detail", detail) < 0 ||
		set_attr_str(exc, "hint", hint) < 0 ||
		set_attr_str(exc, "context", context) < 0)
	{
		Py_DECREF(exc);
		return;
	}
	if (position > 0)
	{
		PyObject   *pos = PyLong_FromLong(position);

		if (pos == NULL || PyObject_SetAttrString(exc, "position", pos) < 0)
		{
			Py_XDECREF(pos);
			Py_DECREF(exc);
			return;
		}
		Py_DECREF(pos);
	}
	PyErr_SetObject(exc_job_error, exc);
	Py_DECREF(exc);
}

static void
report_idle(void)
{
	if (IsAbortedTransactionBlockState())
		pgstat_report_activity(STATE_IDLEINTRANSACTION_ABORTED, NULL);
	else if (IsTransactionBlock())
		pgstat_report_activity(STATE_IDLEINTRANSACTION, NULL);
	else
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		/* as PostgresMain does between transactions; rate-limited inside */
		pgstat_report_stat(false);
	}
}

/*
 * In PG_CATCH of a job: what PostgresMain does after a failed statement.
 * Log the error (as a backend serving a client would), abort the
 * transaction, or the block's current subtransaction, leaving an explicit
 * block in the aborted state, then raise the Python exception: the sink's
 * own if it caused the failure, a JobError otherwise.
 */
static void
job_error_cleanup(JobCall *call)
{
	ErrorData  *edata;

	if (call != NULL && call->role_switched)
	{
		SetUserIdAndSecContext(call->save_userid, call->save_sec_context);
		call->role_switched = false;
	}
	MemoryContextSwitchTo(job_context);
	EmitErrorReport();
	debug_query_string = NULL;
	edata = CopyErrorData();
	FlushErrorState();

	/* a cancel that arrived meanwhile was for this job, which is over */
	QueryCancelPending = false;
	AbortCurrentTransaction();
	MemoryContextSwitchTo(job_context);
	report_idle();

	if (call != NULL && call->dest != NULL && call->dest->exc_type != NULL)
	{
		JobDest    *dest = call->dest;

		if (!ProcDiePending &&
			PyErr_GivenExceptionMatches(dest->exc_type, shoal_exc_query_canceled))
		{
			/* a cancel that reached the sink reads like one that reached the executor */
			Py_CLEAR(dest->exc_type);
			Py_CLEAR(dest->exc_value);
			Py_CLEAR(dest->exc_tb);
			raise_job_error("57014", "canceling statement due to user request", NULL, NULL, NULL, 0);
		}
		else
		{
			PyErr_Restore(dest->exc_type, dest->exc_value, dest->exc_tb);
			dest->exc_type = dest->exc_value = dest->exc_tb = NULL;
		}
	}
	else
	{
		int			position = edata->cursorpos;
		char	   *context = edata->context;

		/*
		 * SPI reports a syntax error's position as internal to "its" query,
		 * and names the query as the outermost context line: the job is that
		 * query, so give the position back and drop the line.
		 */
		if (position == 0 && edata->internalpos > 0 && call != NULL && call->sql != NULL &&
			edata->internalquery != NULL && strcmp(edata->internalquery, call->sql) == 0)
			position = edata->internalpos;
		if (context != NULL)
		{
			char	   *last = strrchr(context, '\n');
			char	   *line = last ? last + 1 : context;

			if (strncmp(line, "SQL statement \"", 15) == 0)
			{
				if (last)
					*last = '\0';
				else
					context = NULL;
			}
		}
		raise_job_error(unpack_sql_state(edata->sqlerrcode), edata->message, edata->detail,
						edata->hint, context, position);
	}
	FreeErrorData(edata);
}

/*
 * May a job function run now?  Only in shoal's background processes (in a
 * backend they would commit or abort the client's transaction under its
 * feet), and not from the sink of a running job.  A PostgreSQL error left
 * pending by another `_shoal_pg` call is reported now, as a JobError.
 */
static bool
job_allowed(const char *what)
{
	if (!shoal_in_bgworker)
	{
		PyErr_Format(PyExc_RuntimeError,
					 "_shoal_pg.%s is only for shoal's multiplexer and workers", what);
		return false;
	}
	if (job_running)
	{
		PyErr_Format(PyExc_RuntimeError,
					 "_shoal_pg.%s cannot be called while a job runs", what);
		return false;
	}
	init_job_state();
	if (shoal_pgmodule_error_pending())
	{
		PG_TRY();
		{
			shoal_pgmodule_rethrow();
		}
		PG_CATCH();
		{
			job_error_cleanup(NULL);
		}
		PG_END_TRY();
		return false;
	}
	return true;
}

/* As PostgresMain refuses all but the statements that end a failed block. */
static bool
refuse_in_failed_block(void)
{
	if (!IsAbortedTransactionBlockState())
		return false;
	raise_job_error("25P02",
					"current transaction is aborted, commands ignored until end of transaction block",
					NULL, NULL, NULL, 0);
	return true;
}

/* ---------------------------------------------------------------------
 * execute()
 * ---------------------------------------------------------------------
 */

/*
 * The types of parameters given as 0, as the extended query protocol infers
 * them (parse analysis with variable parameters), before SPI prepares the
 * statement with the types fixed.
 */
static void
infer_param_types(const char *sql, int nargs, Oid *types)
{
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	Oid		   *ptypes = palloc(sizeof(Oid) * Max(nargs, 1));
	int			n = nargs;
	ListCell   *lc;

	memcpy(ptypes, types, sizeof(Oid) * nargs);
	foreach(lc, raw)
		(void) parse_analyze_varparams(lfirst_node(RawStmt, lc), sql, &ptypes, &n, NULL);
	for (int i = 0; i < nargs; i++)
	{
		if (ptypes[i] == InvalidOid || ptypes[i] == UNKNOWNOID)
			ereport(ERROR,
					(errcode(ERRCODE_INDETERMINATE_DATATYPE),
					 errmsg("could not determine data type of parameter $%d", i + 1)));
		types[i] = ptypes[i];
	}
}

static SPIPlanPtr
prepare_plan(JobCall *call)
{
	Oid		   *types = palloc(sizeof(Oid) * Max(call->nargs, 1));
	SPIPlanPtr	plan;

	memcpy(types, call->types, sizeof(Oid) * call->nargs);
	for (int i = 0; i < call->nargs; i++)
	{
		if (types[i] == InvalidOid)
		{
			infer_param_types(call->sql, call->nargs, types);
			break;
		}
	}
	plan = SPI_prepare_cursor(call->sql, call->nargs, types, CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

static void
init_param_io(JobParamIO *io, SPIPlanPtr plan, int nargs)
{
	for (int i = 0; i < nargs; i++)
	{
		memset(&io[i], 0, sizeof(JobParamIO));
		io[i].type = SPI_getargtypeid(plan, i);
	}
}

/* The cached plan for this call, prepared and kept on first use. */
static JobPlan *
cached_plan(JobCall *call)
{
	JobPlanKey	key;
	JobPlan    *entry;
	SPIPlanPtr	plan;
	MemoryContext cxt;
	char	   *keycopy;
	bool		found;

	resetStringInfo(&key_buf);
	appendBinaryStringInfo(&key_buf, (char *) &call->nargs, sizeof(int));
	appendBinaryStringInfo(&key_buf, (char *) call->types, sizeof(Oid) * call->nargs);
	appendBinaryStringInfo(&key_buf, call->sql, strlen(call->sql));
	key.data = key_buf.data;
	key.len = key_buf.len;

	entry = hash_search(plan_cache, &key, HASH_FIND, NULL);
	if (entry != NULL)
	{
		dlist_move_head(&plan_lru, &entry->lru);
		return entry;
	}

	plan = prepare_plan(call);
	if (hash_get_num_entries(plan_cache) >= JOB_PLAN_CACHE_SIZE)
		evict_plan();
	cxt = AllocSetContextCreate(TopMemoryContext, "shoal job plan", ALLOCSET_SMALL_SIZES);
	keycopy = MemoryContextAlloc(cxt, key.len);
	memcpy(keycopy, key.data, key.len);
	SPI_keepplan(plan);

	entry = hash_search(plan_cache, &key, HASH_ENTER, &found);
	Assert(!found);
	entry->key.data = keycopy;
	entry->key.len = key.len;
	entry->plan = plan;
	entry->cxt = cxt;
	entry->nargs = call->nargs;
	entry->params = MemoryContextAlloc(cxt, sizeof(JobParamIO) * Max(call->nargs, 1));
	init_param_io(entry->params, plan, call->nargs);
	dlist_push_head(&plan_lru, &entry->lru);
	return entry;
}

/* The parameters as Datums, by the types the plan has. */
static ParamListInfo
decode_params(JobCall *call, JobParamIO *io, MemoryContext iocxt)
{
	ParamListInfo params = makeParamList(call->nargs);

	for (int i = 0; i < call->nargs; i++)
	{
		ParamExternData *p = &params->params[i];
		JobParamIO *pio = &io[i];

		p->ptype = pio->type;
		p->pflags = PARAM_FLAG_CONST;
		p->isnull = (call->values[i] == NULL);
		p->value = (Datum) 0;
		if (p->isnull)
			continue;

		if (call->binary[i])
		{
			StringInfoData buf;

			if (!pio->have_recv)
			{
				Oid			func;

				getTypeBinaryInputInfo(pio->type, &func, &pio->ioparam);
				fmgr_info_cxt(func, &pio->recvfunc, iocxt);
				pio->have_recv = true;
			}
			/* the data is NUL-terminated, as receive functions may rely on */
			buf.data = unconstify(char *, call->values[i]);
			buf.len = call->lengths[i];
			buf.maxlen = call->lengths[i] + 1;
			buf.cursor = 0;
			p->value = ReceiveFunctionCall(&pio->recvfunc, &buf, pio->ioparam, -1);
			if (buf.cursor != buf.len)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("incorrect binary data format in bind parameter %d", i + 1)));
		}
		else
		{
			char	   *text = unconstify(char *, call->values[i]);

			if (!pio->have_in)
			{
				Oid			func;

				getTypeInputInfo(pio->type, &func, &pio->ioparam);
				fmgr_info_cxt(func, &pio->infunc, iocxt);
				pio->have_in = true;
			}
			if (call->from_str[i] && GetDatabaseEncoding() != PG_UTF8)
				text = pg_any_to_server(text, call->lengths[i], PG_UTF8);
			p->value = InputFunctionCall(&pio->infunc, text, pio->ioparam, -1);
		}
	}
	return params;
}

static void
set_tag(JobCall *call, CommandTag tag, int rc)
{
	const char *name;

	/* SELECT INTO, CREATE TABLE AS, CREATE MATERIALIZED VIEW: "SELECT n", as psql shows */
	if (rc == SPI_OK_SELINTO ||
		((tag == CMDTAG_CREATE_TABLE_AS || tag == CMDTAG_CREATE_MATERIALIZED_VIEW) &&
		 call->processed > 0))
		tag = CMDTAG_SELECT;
	name = GetCommandTagName(tag);
	if (command_tag_display_rowcount(tag))
		snprintf(call->tag, sizeof(call->tag),
				 tag == CMDTAG_INSERT ? "%s 0 " UINT64_FORMAT : "%s " UINT64_FORMAT,
				 name, call->processed);
	else
		strlcpy(call->tag, name, sizeof(call->tag));
}

/*
 * The statement, from StartTransactionCommand to CommitTransactionCommand;
 * runs under PG_TRY.  Outside a block this is the statement's own
 * transaction; inside one, CommitTransactionCommand only makes its effects
 * visible to the next.
 */
static void
run_statement(JobCall *call)
{
	SPIPlanPtr	plan = NULL;
	JobParamIO *io = NULL;
	MemoryContext iocxt;
	ParamListInfo params = NULL;
	SPIExecuteOptions options;
	CommandTag	tag = CMDTAG_UNKNOWN;
	int			rc;

	/* A cancel meant for an earlier job must not cancel this one. */
	QueryCancelPending = false;

	pgstat_report_activity(STATE_RUNNING, call->sql);
	debug_query_string = call->sql;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();

	/*
	 * As the role that issued the remote query: its privileges are checked,
	 * row security applies to it, "$user" in search_path is it.  Restored
	 * after the commit (deferred triggers fire as the role too); an abort
	 * restores the worker's own identity by itself as well.
	 */
	if (call->role != NULL)
	{
		Oid			roleid = get_role_oid(call->role, false);

		GetUserIdAndSecContext(&call->save_userid, &call->save_sec_context);
		SetUserIdAndSecContext(roleid, call->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		call->role_switched = true;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * The outer snapshot, for parse analysis and parameter input; SPI takes a
	 * new one per statement (READ COMMITTED) or reuses the transaction's.  On
	 * a held snapshot, SPI runs read-only, on exactly that one.
	 */
	if (call->held_snapshot && !snapshot_is_held())
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("no snapshot is held for this statement")));
	PushActiveSnapshot(call->held_snapshot ? held_snapshot : GetTransactionSnapshot());

	if (call->cache)
	{
		JobPlan    *entry = cached_plan(call);

		plan = entry->plan;
		io = entry->params;
		iocxt = entry->cxt;
	}
	else if (call->nargs > 0)
	{
		plan = prepare_plan(call);
		io = palloc(sizeof(JobParamIO) * call->nargs);
		init_param_io(io, plan, call->nargs);
		iocxt = CurrentMemoryContext;
	}
	else
		iocxt = CurrentMemoryContext;
	if (call->nargs > 0)
		params = decode_params(call, io, iocxt);

	call->dest = make_dest(call->sink, call->chunk_bytes);
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = call->held_snapshot;
	options.tcount = call->max_rows;
	options.dest = &call->dest->pub;

	if (plan != NULL)
	{
		List	   *sources = SPI_plan_get_plan_sources(plan);

		rc = SPI_execute_plan_extended(plan, &options);
		if (sources != NIL)
			tag = ((CachedPlanSource *) llast(sources))->commandTag;
	}
	else
	{
		/* one-shot: each statement is analysed just before it runs, as a script needs */
		List	   *raw = raw_parser(call->sql, RAW_PARSE_DEFAULT);

		if (raw != NIL)
			tag = CreateCommandTag(llast_node(RawStmt, raw)->stmt);
		rc = SPI_execute_extended(call->sql, &options);
	}
	if (rc == SPI_ERROR_TRANSACTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("transaction control statements cannot run as shoal jobs"),
				 errhint("Use the job transaction functions: begin(), commit(), savepoint()...")));
	if (rc == SPI_ERROR_COPY)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY to or from the client cannot run as a shoal job")));
	if (rc < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	call->processed = SPI_processed;
	set_tag(call, tag, rc);

	/* the last rows go before the commit: a failing sink still aborts the statement */
	dest_flush(call->dest);

	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();

	if (call->role_switched)
	{
		SetUserIdAndSecContext(call->save_userid, call->save_sec_context);
		call->role_switched = false;
	}
	debug_query_string = NULL;
	report_idle();
}

/* Pointer and length of a parameter's data, which stays owned by the Python object. */
static bool
param_data(PyObject *item, bool binary, JobCall *call, int i)
{
	call->from_str[i] = false;
	if (PyUnicode_Check(item))
	{
		Py_ssize_t	len;
		const char *utf8 = PyUnicode_AsUTF8AndSize(item, &len);

		if (utf8 == NULL)
			return false;
		if (len > INT_MAX)
			goto too_long;
		call->values[i] = utf8;
		call->lengths[i] = (int) len;
		call->from_str[i] = true;
	}
	else if (PyBytes_Check(item))
	{
		/* bytes objects are NUL-terminated past their end */
		if (PyBytes_GET_SIZE(item) > INT_MAX)
			goto too_long;
		call->values[i] = PyBytes_AS_STRING(item);
		call->lengths[i] = (int) PyBytes_GET_SIZE(item);
	}
	else if (PyObject_CheckBuffer(item))
	{
		Py_buffer	view;
		char	   *copy;

		if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0)
			return false;
		if (view.len > INT_MAX)
		{
			PyBuffer_Release(&view);
			goto too_long;
		}
		copy = MemoryContextAlloc(job_context, view.len + 1);
		memcpy(copy, view.buf, view.len);
		copy[view.len] = '\0';
		call->values[i] = copy;
		call->lengths[i] = (int) view.len;
		PyBuffer_Release(&view);
	}
	else
	{
		PyErr_Format(PyExc_TypeError, "parameter $%d must be bytes, str or None, not %s",
					 i + 1, Py_TYPE(item)->tp_name);
		return false;
	}
	if (!binary && memchr(call->values[i], '\0', call->lengths[i]) != NULL)
	{
		PyErr_Format(PyExc_ValueError, "text parameter $%d contains a NUL byte", i + 1);
		return false;
	}
	return true;

too_long:
	PyErr_Format(PyExc_ValueError, "parameter $%d is too long", i + 1);
	return false;
}

/*
 * execute(sql, param_types, params, binary_params, role, sink,
 *         chunk_bytes=65536, max_rows=0, cache=True, held_snapshot=False)
 *   -> (command_tag, rows)
 */
PyObject *
shoal_job_execute(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"sql", "param_types", "params", "binary_params", "role", "sink",
	"chunk_bytes", "max_rows", "cache", "held_snapshot", NULL};
	PyObject   *sql_obj;
	PyObject   *types_obj;
	PyObject   *params_obj;
	PyObject   *binary_obj;
	PyObject   *role_obj;
	PyObject   *sink;
	Py_ssize_t	chunk_bytes = 65536;
	long long	max_rows = 0;
	int			cache = 1;
	int			use_held = 0;
	PyObject   *types_seq = NULL;
	PyObject   *params_seq = NULL;
	PyObject   *binary_seq = NULL;
	JobCall		call;
	bool		failed = false;
	Py_ssize_t	n;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UOOOOO|nLpp", kwlist, &sql_obj, &types_obj,
									 &params_obj, &binary_obj, &role_obj, &sink,
									 &chunk_bytes, &max_rows, &cache, &use_held))
		return NULL;
	if (!job_allowed("execute"))
		return NULL;
	if (refuse_in_failed_block())
		return NULL;
	MemoryContextReset(job_context);

	memset(&call, 0, sizeof(call));
	call.sql = PyUnicode_AsUTF8(sql_obj);
	if (call.sql == NULL)
		return NULL;
	if (role_obj != Py_None)
	{
		if (!PyUnicode_Check(role_obj))
		{
			PyErr_SetString(PyExc_TypeError, "role must be a str or None");
			return NULL;
		}
		if ((call.role = PyUnicode_AsUTF8(role_obj)) == NULL)
			return NULL;
	}
	if (sink != Py_None && !PyCallable_Check(sink))
	{
		PyErr_SetString(PyExc_TypeError, "sink must be callable or None");
		return NULL;
	}
	call.sink = sink == Py_None ? NULL : sink;
	if (chunk_bytes < 1 || chunk_bytes > MaxAllocSize / 2)
	{
		PyErr_SetString(PyExc_ValueError, "chunk_bytes out of range");
		return NULL;
	}
	call.chunk_bytes = (int) chunk_bytes;
	if (max_rows < 0)
	{
		PyErr_SetString(PyExc_ValueError, "max_rows must not be negative");
		return NULL;
	}
	call.max_rows = (uint64) max_rows;
	call.cache = cache != 0;
	call.held_snapshot = use_held != 0;

	/* Everything Python is read now: PostgreSQL code then runs on C data only. */
	types_seq = PySequence_Fast(types_obj, "param_types must be a sequence of type OIDs");
	params_seq = types_seq ? PySequence_Fast(params_obj, "params must be a sequence") : NULL;
	if (params_seq == NULL)
		goto fail;
	n = PySequence_Fast_GET_SIZE(types_seq);
	if (PySequence_Fast_GET_SIZE(params_seq) != n)
	{
		PyErr_Format(PyExc_ValueError, "%zd parameter types but %zd parameters",
					 n, PySequence_Fast_GET_SIZE(params_seq));
		goto fail;
	}
	if (n > PG_INT16_MAX)
	{
		PyErr_SetString(PyExc_ValueError, "too many parameters");
		goto fail;
	}
	if (!PyBool_Check(binary_obj))
	{
		binary_seq = PySequence_Fast(binary_obj, "binary_params must be a bool or a sequence of bools");
		if (binary_seq == NULL)
			goto fail;
		if (PySequence_Fast_GET_SIZE(binary_seq) != n)
		{
			PyErr_Format(PyExc_ValueError, "%zd binary_params flags for %zd parameters",
						 PySequence_Fast_GET_SIZE(binary_seq), n);
			goto fail;
		}
	}
	call.nargs = (int) n;
	call.types = MemoryContextAllocZero(job_context, sizeof(Oid) * Max(n, 1));
	call.values = MemoryContextAllocZero(job_context, sizeof(char *) * Max(n, 1));
	call.lengths = MemoryContextAllocZero(job_context, sizeof(int) * Max(n, 1));
	call.binary = MemoryContextAllocZero(job_context, sizeof(bool) * Max(n, 1));
	call.from_str = MemoryContextAllocZero(job_context, sizeof(bool) * Max(n, 1));
	for (Py_ssize_t i = 0; i < n; i++)
	{
		PyObject   *t = PySequence_Fast_GET_ITEM(types_seq, i);
		PyObject   *v = PySequence_Fast_GET_ITEM(params_seq, i);
		unsigned long oid = PyLong_AsUnsignedLong(t);
		int			b;

		if (oid == (unsigned long) -1 && PyErr_Occurred())
			goto fail;
		if (oid > PG_UINT32_MAX)
		{
			PyErr_Format(PyExc_ValueError, "invalid type OID %lu", oid);
			goto fail;
		}
		call.types[i] = (Oid) oid;
		b = PyObject_IsTrue(binary_seq ? PySequence_Fast_GET_ITEM(binary_seq, i) : binary_obj);
		if (b < 0)
			goto fail;
		call.binary[i] = b != 0;
		if (v == Py_None)
			call.values[i] = NULL;
		else if (!param_data(v, call.binary[i], &call, (int) i))
			goto fail;
	}

	job_running = true;
	PG_TRY();
	{
		run_statement(&call);
	}
	PG_CATCH();
	{
		job_error_cleanup(&call);
		failed = true;
	}
	PG_END_TRY();
	job_running = false;
	MemoryContextSwitchTo(job_context);

	Py_XDECREF(types_seq);
	Py_XDECREF(params_seq);
	Py_XDECREF(binary_seq);
	if (failed)
		return NULL;
	return Py_BuildValue("(sK)", call.tag, (unsigned long long) call.processed);

fail:
	Py_XDECREF(types_seq);
	Py_XDECREF(params_seq);
	Py_XDECREF(binary_seq);
	return NULL;
}

/* ---------------------------------------------------------------------
 * Transaction blocks, for a remote transaction that sticks to a worker
 * ---------------------------------------------------------------------
 */
typedef struct XactCall
{
	const char *name;			/* savepoint name or gid */
	const char *isolation;
	bool		read_only;
	const char *role;
	bool		result;
	bool		role_switched;
	Oid			save_userid;
	int			save_sec_context;
} XactCall;

typedef void (*XactOp) (XactCall *xc);

/*
 * Run one transaction-control step as its own command, the way PostgresMain
 * brackets a statement: start_xact_command ... finish_xact_command.
 */
static PyObject *
run_xact_op(const char *what, const char *activity, XactOp op, XactCall *xc)
{
	bool		failed = false;

	job_running = true;
	PG_TRY();
	{
		pgstat_report_activity(STATE_RUNNING, activity);
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		op(xc);
		CommitTransactionCommand();
		if (xc->role_switched)
		{
			SetUserIdAndSecContext(xc->save_userid, xc->save_sec_context);
			xc->role_switched = false;
		}
		report_idle();
	}
	PG_CATCH();
	{
		JobCall		call;

		memset(&call, 0, sizeof(call));
		call.role_switched = xc->role_switched;
		call.save_userid = xc->save_userid;
		call.save_sec_context = xc->save_sec_context;
		job_error_cleanup(&call);
		failed = true;
	}
	PG_END_TRY();
	job_running = false;
	MemoryContextSwitchTo(job_context);
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

/* Deferred triggers fire at commit and prepare: as the role, when one is given. */
static void
xact_switch_role(XactCall *xc)
{
	Oid			roleid;

	if (xc->role == NULL || IsAbortedTransactionBlockState())
		return;
	roleid = get_role_oid(xc->role, false);
	GetUserIdAndSecContext(&xc->save_userid, &xc->save_sec_context);
	SetUserIdAndSecContext(roleid, xc->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	xc->role_switched = true;
}

static void
op_begin(XactCall *xc)
{
	BeginTransactionBlock();
	/* as BEGIN ISOLATION LEVEL ... READ ONLY does, before the first snapshot */
	(void) set_config_option("transaction_isolation", xc->isolation,
							 superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	if (xc->read_only)
		(void) set_config_option("transaction_read_only", "on",
								 superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/* begin(isolation="read committed", read_only=False) */
PyObject *
shoal_job_begin(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"isolation", "read_only", NULL};
	XactCall	xc;
	int			read_only = 0;

	memset(&xc, 0, sizeof(xc));
	xc.isolation = "read committed";
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|sp", kwlist, &xc.isolation, &read_only))
		return NULL;
	xc.read_only = read_only != 0;
	if (!job_allowed("begin"))
		return NULL;
	if (IsTransactionBlock())
	{
		raise_job_error("25001", "there is already a transaction in progress", NULL, NULL, NULL, 0);
		return NULL;
	}
	return run_xact_op("begin", "BEGIN", op_begin, &xc);
}

static void
op_commit(XactCall *xc)
{
	xact_switch_role(xc);
	xc->result = EndTransactionBlock(false);
}

static PyObject *
xact_end_result(PyObject *done, XactCall *xc)
{
	if (done == NULL)
		return NULL;
	Py_DECREF(done);
	return PyBool_FromLong(xc->result);
}

/*
 * commit(role=None) -> bool: False when the block had failed, in which case
 * it is rolled back, as COMMIT does in psql.
 */
PyObject *
shoal_job_commit(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"role", NULL};
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z", kwlist, &xc.role))
		return NULL;
	if (!job_allowed("commit"))
		return NULL;
	if (!IsTransactionBlock())
	{
		raise_job_error("25P01", "there is no transaction in progress", NULL, NULL, NULL, 0);
		return NULL;
	}
	drop_held_snapshot();
	return xact_end_result(run_xact_op("commit", "COMMIT", op_commit, &xc), &xc);
}

static void
op_rollback(XactCall *xc)
{
	UserAbortTransactionBlock(false);
}

/* rollback(): ends the block, failed or not; nothing to do outside one. */
PyObject *
shoal_job_rollback(PyObject *self, PyObject *unused)
{
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!job_allowed("rollback"))
		return NULL;
	if (!IsTransactionBlock())
		Py_RETURN_NONE;
	drop_held_snapshot();
	return run_xact_op("rollback", "ROLLBACK", op_rollback, &xc);
}

static void
op_savepoint(XactCall *xc)
{
	RequireTransactionBlock(true, "SAVEPOINT");
	DefineSavepoint(xc->name);
}

static void
op_release(XactCall *xc)
{
	RequireTransactionBlock(true, "RELEASE SAVEPOINT");
	ReleaseSavepoint(xc->name);
}

static void
op_rollback_to(XactCall *xc)
{
	RequireTransactionBlock(true, "ROLLBACK TO SAVEPOINT");
	RollbackToSavepoint(xc->name);
}

static PyObject *
savepoint_call(PyObject *args, const char *what, const char *activity, XactOp op,
			   bool refuse_if_failed)
{
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!PyArg_ParseTuple(args, "s", &xc.name))
		return NULL;
	if (!job_allowed(what))
		return NULL;
	if (refuse_if_failed && refuse_in_failed_block())
		return NULL;
	return run_xact_op(what, activity, op, &xc);
}

/* savepoint(name) */
PyObject *
shoal_job_savepoint(PyObject *self, PyObject *args)
{
	return savepoint_call(args, "savepoint", "SAVEPOINT", op_savepoint, true);
}

/* release(name) */
PyObject *
shoal_job_release(PyObject *self, PyObject *args)
{
	return savepoint_call(args, "release", "RELEASE SAVEPOINT", op_release, true);
}

/* rollback_to(name): also how a failed block is recovered, as in psql */
PyObject *
shoal_job_rollback_to(PyObject *self, PyObject *args)
{
	return savepoint_call(args, "rollback_to", "ROLLBACK TO SAVEPOINT", op_rollback_to, false);
}

static void
op_prepare(XactCall *xc)
{
	xact_switch_role(xc);
	/* the handlers' pre_prepare and prepare hooks read it (see shoal.c) */
	if (shoal_prepare_gid)
		pfree(shoal_prepare_gid);
	shoal_prepare_gid = MemoryContextStrdup(TopMemoryContext, xc->name);
	xc->result = PrepareTransactionBlock(xc->name);
}

/*
 * prepare(gid, role=None) -> bool: PREPARE TRANSACTION.  False when the
 * block had failed and was rolled back instead, as in psql.
 */
PyObject *
shoal_job_prepare(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"gid", "role", NULL};
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|z", kwlist, &xc.name, &xc.role))
		return NULL;
	if (!job_allowed("prepare"))
		return NULL;
	if (!IsTransactionBlock())
	{
		raise_job_error("25P01", "there is no transaction in progress", NULL, NULL, NULL, 0);
		return NULL;
	}
	drop_held_snapshot();
	return xact_end_result(run_xact_op("prepare", "PREPARE TRANSACTION", op_prepare, &xc), &xc);
}

static void
op_commit_prepared(XactCall *xc)
{
	PreventInTransactionBlock(true, "COMMIT PREPARED");
	FinishPreparedTransaction(xc->name, true);
}

static void
op_rollback_prepared(XactCall *xc)
{
	PreventInTransactionBlock(true, "ROLLBACK PREPARED");
	FinishPreparedTransaction(xc->name, false);
}

static PyObject *
finish_prepared_call(PyObject *args, const char *what, const char *activity, XactOp op)
{
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!PyArg_ParseTuple(args, "s", &xc.name))
		return NULL;
	if (!job_allowed(what))
		return NULL;
	if (IsTransactionBlock())
	{
		raise_job_error("25001",
						psprintf("%s cannot run inside a transaction block", activity),
						NULL, NULL, NULL, 0);
		return NULL;
	}
	return run_xact_op(what, activity, op, &xc);
}

/* commit_prepared(gid) */
PyObject *
shoal_job_commit_prepared(PyObject *self, PyObject *args)
{
	return finish_prepared_call(args, "commit_prepared", "COMMIT PREPARED", op_commit_prepared);
}

/* rollback_prepared(gid) */
PyObject *
shoal_job_rollback_prepared(PyObject *self, PyObject *args)
{
	return finish_prepared_call(args, "rollback_prepared", "ROLLBACK PREPARED", op_rollback_prepared);
}

/* in_block() -> bool: a transaction block is open (begin() was called). */
PyObject *
shoal_job_in_block(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(IsTransactionBlock());
}

/* block_failed() -> bool: the block is aborted; only rollback() or rollback_to() help. */
PyObject *
shoal_job_block_failed(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(IsAbortedTransactionBlockState());
}

static void
op_hold_snapshot(XactCall *xc)
{
	held_snapshot = RegisterSnapshotOnOwner(GetTransactionSnapshot(), TopTransactionResourceOwner);
	held_lxid = MyProc->lxid;
}

/* hold_snapshot(): take a snapshot now, for execute(..., held_snapshot=True) */
PyObject *
shoal_job_hold_snapshot(PyObject *self, PyObject *unused)
{
	XactCall	xc;

	memset(&xc, 0, sizeof(xc));
	if (!job_allowed("hold_snapshot"))
		return NULL;
	if (!IsTransactionBlock() || IsAbortedTransactionBlockState() || IsolationUsesXactSnapshot())
	{
		raise_job_error("25000", "a snapshot is held only in a READ COMMITTED block that has not failed",
						NULL, NULL, NULL, 0);
		return NULL;
	}
	drop_held_snapshot();
	return run_xact_op("hold_snapshot", "SNAPSHOT", op_hold_snapshot, &xc);
}

/* drop_snapshot(): forget the held snapshot, if any; before the block ends */
PyObject *
shoal_job_drop_snapshot(PyObject *self, PyObject *unused)
{
	drop_held_snapshot();
	Py_RETURN_NONE;
}

/*
 * clear_cancel() -> bool: forget a pending cancel (returns whether there
 * was one).  A SIGINT that arrives while no job runs leaves it pending, and
 * then check_interrupts() and wait() keep raising QueryCanceled.
 */
PyObject *
shoal_job_clear_cancel(PyObject *self, PyObject *unused)
{
	bool		pending = QueryCancelPending;

	QueryCancelPending = false;
	return PyBool_FromLong(pending);
}

/*
 * setting(name) -> str | None: a configuration parameter's current value,
 * None if there is no such parameter.  Needs no transaction.  In a client
 * backend a superuser-only parameter (shoal.cluster_secret) reads as None
 * unless the current user may see it.
 */
PyObject *
shoal_pg_setting(PyObject *self, PyObject *args)
{
	const char *name;
	const char *value = NULL;
	bool		hidden = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		failed = false;

	if (!PyArg_ParseTuple(args, "s", &name))
		return NULL;
	PG_TRY();
	{
		/*
		 * Code in this interpreter is as trusted as C in the backend, and
		 * shoal's own plumbing needs superuser-only settings (the socket
		 * directories) in any user's session.  Only the cluster's key is
		 * kept from sessions whose user may not read it.
		 */
		if (!shoal_in_bgworker && pg_strcasecmp(name, "shoal.cluster_secret") == 0 &&
			!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_SETTINGS))
			hidden = true;
		else
			value = GetConfigOption(name, true, false);
	}
	PG_CATCH();
	{
		if (shoal_in_bgworker)
		{
			init_job_state();
			job_error_cleanup(NULL);
		}
		else
			shoal_pgmodule_catch(oldcxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	if (hidden || value == NULL)
		Py_RETURN_NONE;
	return shoal_cstring_to_py(value);
}

/* Adds JobError to the module. */
int
shoal_jobs_module_init(PyObject *mod)
{
	PyObject   *dict = Py_BuildValue("{sOsOsOsOsOsO}", "sqlstate", Py_None, "message", Py_None,
									 "detail", Py_None, "hint", Py_None, "context", Py_None,
									 "position", Py_None);

	if (dict == NULL)
		return -1;
	exc_job_error = PyErr_NewExceptionWithDoc("_shoal_pg.JobError",
											  "A job failed with a PostgreSQL error (already "
											  "handled: the transaction or subtransaction is "
											  "aborted).  Attributes: sqlstate, message, detail, "
											  "hint, context, position.",
											  PyExc_Exception, dict);
	Py_DECREF(dict);
	if (exc_job_error == NULL)
		return -1;
	return PyModule_AddObjectRef(mod, "JobError", exc_job_error);
}
