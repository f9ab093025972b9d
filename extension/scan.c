/*-------------------------------------------------------------------------
 * scan.c
 *		Executing a scan of a shoal_fdw table.
 *
 * The handler's execute() is called at BeginForeignScan whenever the
 * parameters are known then, so that an Append over many foreign
 * partitions sends all its requests before reading any answer.  Iterate
 * reads Python rows or binary tuple data; binary chunks are decoded in C.
 *
 * While snapshot.c decides whether a statement needs one cut across nodes,
 * scans are deferred: their requests leave once the cut (if any) is taken,
 * and every request of a scan, rescans included, runs in that cut.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "commands/explain.h"
#include "miscadmin.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "nodes/nodeFuncs.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

typedef struct ShoalScanState
{
	PyObject   *handler;
	PyObject   *iterator;
	PyObject   *columns;		/* names of the requested columns */
	PyObject   *sortkeys;		/* list of SortKey, or NULL */
	int			limit;			/* -1: none */
	bool		exact;
	bool		text_values;	/* quals.params in their types' text form */
	List	   *quals;			/* ShoalQual */
	List	   *param_states;	/* ExprState per $n */
	Oid		   *param_types;
	int			nparams;
	ShoalRowMap map;
	ShoalBinaryReader reader;
	MemoryContext tuple_cxt;	/* the current tuple's values */
	bool		started;
	int			cut;			/* snapshot.c's cut the scan reads in, 0: none */
	bool		released;
	MemoryContextCallback cleanup;
} ShoalScanState;

/*
 * Drop the scan's Python objects.  A generator being dropped runs its
 * finally blocks (cancelling remote work, closing cursors).  Runs from
 * EndForeignScan, or, since the executor never calls End after an error,
 * when the query's memory goes away.
 */
static void
release_scan(void *arg)
{
	ShoalScanState *state = arg;

	if (state->released)
		return;
	state->released = true;
	shoal_binary_release(&state->reader);
	Py_CLEAR(state->iterator);

	/*
	 * Dropping a generator ran its finally blocks; a PostgreSQL error they
	 * caught cannot be thrown from here (this may run during abort).
	 */
	shoal_pgmodule_demote();
	Py_CLEAR(state->columns);
	Py_CLEAR(state->sortkeys);
	Py_CLEAR(state->handler);
	shoal_rowmap_release(&state->map);
}

static bool
exec_param_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param) && ((Param *) node)->paramkind == PARAM_EXEC)
		return true;
	return expression_tree_walker(node, exec_param_walker, context);
}

static PyObject *
build_sortkeys(List *private, Relation rel)
{
	PyObject   *keys;
	ListCell   *lc;

	if (private == NIL)
		return NULL;
	keys = PyList_New(0);
	if (keys == NULL)
		shoal_python_raise("building sort keys");
	foreach(lc, private)
	{
		List	   *item = lfirst(lc);
		AttrNumber	attnum = intVal(linitial(item));
		char	   *coll = strVal(lfourth(item));
		PyObject   *key;

		key = PyObject_CallFunction(shoal_host_attr("SortKey"), "NiOON",
									shoal_cstring_to_py(NameStr(TupleDescAttr(RelationGetDescr(rel),
																			  attnum - 1)->attname)),
									(int) attnum,
									boolVal(lsecond(item)) ? Py_True : Py_False,
									boolVal(lthird(item)) ? Py_True : Py_False,
									coll[0] ? shoal_cstring_to_py(coll) : Py_NewRef(Py_None));
		if (key == NULL || PyList_Append(keys, key) < 0)
		{
			Py_XDECREF(key);
			Py_DECREF(keys);
			shoal_python_raise("building sort keys");
		}
		Py_DECREF(key);
	}
	return keys;
}

/* The handler arguments after quals: columns, and sortkeys/limit only when pushed down. */
static PyObject *
scan_kwargs(ShoalScanState *state)
{
	PyObject   *kwargs = PyDict_New();

	if (kwargs == NULL)
		shoal_python_raise("building arguments");
	if (state->sortkeys != NULL && PyDict_SetItemString(kwargs, "sortkeys", state->sortkeys) < 0)
		shoal_python_raise("building arguments");
	if (state->limit >= 0)
	{
		PyObject   *limit = PyLong_FromLong(state->limit);

		if (limit == NULL || PyDict_SetItemString(kwargs, "limit", limit) < 0)
			shoal_python_raise("building arguments");
		Py_DECREF(limit);
	}
	return kwargs;
}

/*
 * The scan's Quals, with the values of its parameters now (a nested loop's
 * outer values included).
 */
PyObject *
shoal_scan_quals(ForeignScanState *node)
{
	ShoalScanState *state = node->fdw_state;
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	/* per-tuple memory, reset below: a nested loop starts a scan per outer row */
	MemoryContext old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	Datum	   *values = palloc(sizeof(Datum) * (state->nparams + 1));
	bool	   *nulls = palloc(sizeof(bool) * (state->nparams + 1));
	ListCell   *lc;
	int			i = 0;
	PyObject   *quals;

	foreach(lc, state->param_states)
	{
		values[i] = ExecEvalExpr((ExprState *) lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	quals = shoal_quals_to_py(state->quals, node->ss.ss_currentRelation, values, nulls,
							  state->param_types, state->nparams, state->exact, state->text_values);
	MemoryContextSwitchTo(old);
	MemoryContextReset(econtext->ecxt_per_tuple_memory);
	return quals;
}

/* What the handler returned for the scan: an iterable of rows or binary tuple data. */
void
shoal_scan_set_result(ForeignScanState *node, PyObject *result)
{
	ShoalScanState *state = node->fdw_state;

	state->iterator = PyObject_GetIter(result);
	Py_DECREF(result);
	if (state->iterator == NULL)
		shoal_python_raise("the handler must return an iterable of rows");
	state->started = true;
}

static void
start_scan(ForeignScanState *node, ShoalScanState *state)
{
	PyObject   *args = Py_BuildValue("(NO)", shoal_scan_quals(node), state->columns);
	PyObject   *kwargs = scan_kwargs(state);
	PyObject   *result;

	shoal_current_cut = state->cut;
	PG_TRY();
	{
		result = shoal_call_method_kw(state->handler, "execute", args, kwargs);
	}
	PG_FINALLY();
	{
		shoal_current_cut = 0;
	}
	PG_END_TRY();
	shoal_scan_set_result(node, result);
}

/*
 * Set up the scan state; with start, send the scan's request now, or defer
 * it for snapshot.c.
 */
void
shoal_scan_begin(ForeignScanState *node, int eflags, bool start)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	Relation	rel = node->ss.ss_currentRelation;
	ShoalScanState *state = palloc0(sizeof(ShoalScanState));
	List	   *private = plan->fdw_private;
	ListCell   *lc;
	int			i = 0;

	node->fdw_state = state;
	state->handler = Py_NewRef(shoal_handler_for(RelationGetRelid(rel)));
	state->cleanup.func = release_scan;
	state->cleanup.arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &state->cleanup);

	state->quals = shoal_quals_from_private(list_nth(private, SHOAL_PRIVATE_QUALS));
	state->limit = intVal(list_nth(private, SHOAL_PRIVATE_LIMIT));
	state->exact = intVal(list_nth(private, SHOAL_PRIVATE_EXACT)) != 0;
	state->text_values = shoal_handler_flag(state->handler, "text_values");
	shoal_rowmap_init(&state->map, rel, list_nth(private, SHOAL_PRIVATE_COLUMNS));
	state->columns = shoal_column_names(rel, list_nth(private, SHOAL_PRIVATE_COLUMNS));
	state->sortkeys = build_sortkeys(list_nth(private, SHOAL_PRIVATE_SORTKEYS), rel);
	shoal_binary_init(&state->reader);
	state->tuple_cxt = AllocSetContextCreate(CurrentMemoryContext, "shoal scan tuple",
											 ALLOCSET_DEFAULT_SIZES);

	state->nparams = list_length(plan->fdw_exprs);
	state->param_types = palloc(sizeof(Oid) * (state->nparams + 1));
	foreach(lc, plan->fdw_exprs)
		state->param_types[i++] = exprType(lfirst(lc));
	state->param_states = ExecInitExprList(plan->fdw_exprs, (PlanState *) node);

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	shoal_xact_touch(state->handler);
	if (!start || shoal_defer_scan(node, plan->fs_server))
		return;
	/* send the request now, unless it needs values an outer nested loop has not produced yet */
	if (!exec_param_walker((Node *) plan->fdw_exprs, NULL))
		start_scan(node, state);
}

static void
shoalBeginForeignScan(ForeignScanState *node, int eflags)
{
	shoal_scan_begin(node, eflags, true);
}

/* The handler of a scan (for snapshot.c). */
PyObject *
shoal_scan_handler(ForeignScanState *node)
{
	return ((ShoalScanState *) node->fdw_state)->handler;
}

/* Start a deferred scan, reading in cut (0: none). */
void
shoal_scan_start_deferred(ForeignScanState *node, int cut)
{
	ShoalScanState *state = node->fdw_state;
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;

	state->cut = cut;
	if (!state->started && !exec_param_walker((Node *) plan->fdw_exprs, NULL))
		start_scan(node, state);
}

/* The scan's next row in its scan slot (empty at the end), once it has started. */
TupleTableSlot *
shoal_scan_next(ForeignScanState *node)
{
	ShoalScanState *state = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	MemoryContext old;

	MemoryContextReset(state->tuple_cxt);
	old = MemoryContextSwitchTo(state->tuple_cxt);
	for (;;)
	{
		PyObject   *item;

		if (shoal_binary_next(&state->reader, slot, state->map.io,
							  state->map.nshort, state->map.short_map,
							  state->map.nlong, state->map.long_map))
			break;
		if (state->reader.finished || state->iterator == NULL)
		{
			ExecClearTuple(slot);
			break;
		}
		item = shoal_iter_next(state->iterator, "execute");
		if (item == NULL)
		{
			if (shoal_binary_incomplete(&state->reader))
				ereport(ERROR,
						(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
						 errmsg("binary tuple data from the handler ended inside a %s",
								state->reader.in_header ? "COPY header" : "tuple")));
			Py_CLEAR(state->iterator);
			ExecClearTuple(slot);
			break;
		}
		if (shoal_is_binary_chunk(item))
		{
			PG_TRY();
			{
				shoal_binary_feed(&state->reader, item);
			}
			PG_FINALLY();
			{
				Py_DECREF(item);
			}
			PG_END_TRY();
			continue;
		}
		PG_TRY();
		{
			shoal_row_to_slot(&state->map, item, slot);
		}
		PG_FINALLY();
		{
			Py_DECREF(item);
		}
		PG_END_TRY();
		break;
	}
	MemoryContextSwitchTo(old);
	return slot;
}

static TupleTableSlot *
shoalIterateForeignScan(ForeignScanState *node)
{
	ShoalScanState *state = node->fdw_state;

	if (!state->started)
		start_scan(node, state);
	return shoal_scan_next(node);
}

static void
shoalReScanForeignScan(ForeignScanState *node)
{
	ShoalScanState *state = node->fdw_state;

	if (state->iterator != NULL && PyGen_Check(state->iterator))
	{
		PyObject   *r = PyObject_CallMethod(state->iterator, "close", NULL);

		if (r == NULL)
			shoal_python_raise("closing the scan");
		Py_DECREF(r);
		shoal_pgmodule_check();
	}
	Py_CLEAR(state->iterator);
	/* reset, not re-init: a nested loop rescans once per outer row, and init allocates */
	shoal_binary_reset(&state->reader);
	state->started = false;
}

/* Whether the scan's request has gone (its result set). */
bool
shoal_scan_started(ForeignScanState *node)
{
	return ((ShoalScanState *) node->fdw_state)->started;
}

/* Release the scan's Python objects (EndForeignScan). */
void
shoal_scan_end(ForeignScanState *node)
{
	ShoalScanState *state = node->fdw_state;

	if (state != NULL)
		release_scan(state);
}

static void
shoalEndForeignScan(ForeignScanState *node)
{
	shoal_scan_end(node);
}

/* The values of the $n that stand for constants (a handler's constants_as_params). */
static void
explain_constant_params(ForeignScan *plan, ExplainState *es)
{
	StringInfoData buf;
	ListCell   *lc;
	int			n = 0;

	initStringInfo(&buf);
	foreach(lc, plan->fdw_exprs)
	{
		Node	   *expr = lfirst(lc);

		n++;
		if (!IsA(expr, Const))
			continue;
		appendStringInfo(&buf, "%s$%d = %s", buf.len > 0 ? ", " : "", n,
						 deparse_expression(expr, NIL, false, false));
	}
	if (buf.len > 0)
		ExplainPropertyText("Pushed Constants", buf.data, es);
}

/*
 * EXPLAIN what the scan pushes down (filter, constants, sort, limit); the
 * handler's Quals without values, for its own explain method.
 */
PyObject *
shoal_scan_explain_quals(ForeignScanState *node, ExplainState *es)
{
	ShoalScanState *state = node->fdw_state;
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, state->quals)
	{
		ShoalQual  *q = lfirst(lc);

		if (q->kind == SHOAL_QUAL_OTHER && !state->exact)
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, " AND ");
		appendStringInfoString(&buf, q->sql);
	}
	if (buf.len > 0)
		ExplainPropertyText(state->exact ? "Pushed Filter" : "Filter Hints", buf.data, es);
	explain_constant_params((ForeignScan *) node->ss.ps.plan, es);
	if (state->sortkeys != NULL)
	{
		PyObject   *text = PyObject_CallFunction(shoal_host_attr("describe_sortkeys"), "O",
												 state->sortkeys);

		if (text == NULL)
			shoal_python_raise("describing sort keys");
		ExplainPropertyText("Pushed Sort", PyUnicode_AsUTF8(text), es);
		Py_DECREF(text);
	}
	if (state->limit >= 0)
		ExplainPropertyInteger("Pushed Limit", NULL, state->limit, es);
	return shoal_quals_to_py(state->quals, node->ss.ss_currentRelation, NULL, NULL, NULL, 0,
							 state->exact, false);
}

/* EXPLAIN what a handler's explain method returned: lines, or label -> text. */
void
shoal_explain_handler_lines(PyObject *lines, ExplainState *es)
{
	PyObject   *iter;
	PyObject   *item;

	if (PyDict_Check(lines))
	{
		PyObject   *key;
		PyObject   *value;
		Py_ssize_t	pos = 0;

		while (PyDict_Next(lines, &pos, &key, &value))
		{
			PyObject   *k = PyObject_Str(key);
			PyObject   *v = PyObject_Str(value);

			if (k && v)
				ExplainPropertyText(PyUnicode_AsUTF8(k), PyUnicode_AsUTF8(v), es);
			Py_XDECREF(k);
			Py_XDECREF(v);
		}
		Py_DECREF(lines);
		return;
	}
	iter = PyObject_GetIter(lines);
	Py_DECREF(lines);
	if (iter == NULL)
		shoal_python_raise("explain must return lines or a mapping");
	while ((item = PyIter_Next(iter)) != NULL)
	{
		PyObject   *s = PyObject_Str(item);

		Py_DECREF(item);
		if (s == NULL)
			break;
		ExplainPropertyText("Handler", PyUnicode_AsUTF8(s), es);
		Py_DECREF(s);
	}
	Py_DECREF(iter);
	if (PyErr_Occurred())
		shoal_python_raise("explain");
	shoal_pgmodule_check();
}

static void
shoalExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	ShoalScanState *state = node->fdw_state;
	PyObject   *quals = shoal_scan_explain_quals(node, es);
	PyObject   *args = Py_BuildValue("(NO)", quals, state->columns);
	PyObject   *kwargs = scan_kwargs(state);

	if (PyDict_SetItemString(kwargs, "verbose", es->verbose ? Py_True : Py_False) < 0)
		shoal_python_raise("explain");
	shoal_explain_handler_lines(shoal_call_method_kw(state->handler, "explain", args, kwargs), es);
}

void
shoal_register_scan_callbacks(FdwRoutine *routine)
{
	routine->BeginForeignScan = shoalBeginForeignScan;
	routine->IterateForeignScan = shoalIterateForeignScan;
	routine->ReScanForeignScan = shoalReScanForeignScan;
	routine->EndForeignScan = shoalEndForeignScan;
	routine->ExplainForeignScan = shoalExplainForeignScan;
}
