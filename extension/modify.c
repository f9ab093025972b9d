/*-------------------------------------------------------------------------
 * modify.c
 *		INSERT, UPDATE and DELETE on shoal_fdw tables.
 *
 * Rows go to the handler as dicts: insert(values), update(rowid, new
 * values of the columns the statement sets), delete(rowid).  The row id is
 * the handler's rowid_column, carried through the plan as a row identity
 * column.  Tuple routing and COPY into partitioned tables come through
 * BeginForeignInsert; batches through bulk_insert.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/table.h"
#include "optimizer/pathnode.h"
#include "parser/parse_relation.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "nodes/makefuncs.h"
#include "optimizer/appendinfo.h"
#include "optimizer/inherit.h"
#include "parser/parsetree.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#define ROWID_JUNK_NAME "shoal_rowid"

typedef struct ShoalModifyState
{
	PyObject   *handler;
	CmdType		operation;
	List	   *target_attrs;	/* columns sent to the handler */
	List	   *all_attrs;		/* every live column, for RETURNING */
	AttrNumber	rowid_junk;		/* in the subplan's output */
	Oid			rowid_type;
	bool		returning;
	int			batch_size;
	bool		text_values;	/* the handler takes values in their types' text form */
	/* INSERT ... ON CONFLICT DO UPDATE: the statement, and its clause's values evaluated here */
	ModifyTableState *upsert;
	List	   *upsert_exprs;
	/* rows an UPDATE moves into this table, when it is one of the UPDATE's targets too */
	struct ShoalModifyState *routed;
	ShoalRowMap map;			/* for rows the handler returns */
	MemoryContext row_cxt;
	bool		started;		/* begin_modify was called: not for EXPLAIN */
	bool		released;
	MemoryContextCallback cleanup;
} ShoalModifyState;

static AttrNumber
rowid_attnum(PyObject *handler, Relation rel)
{
	PyObject   *name = PyObject_GetAttrString(handler, "rowid_column");
	AttrNumber	attnum;
	const char *cname;

	if (name == NULL)
		shoal_python_raise("rowid_column");
	if (name == Py_None)
	{
		Py_DECREF(name);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_CREATE_EXECUTION),
				 errmsg("foreign table \"%s\" does not support UPDATE or DELETE",
						RelationGetRelationName(rel)),
				 errhint("Its handler must name a rowid_column.")));
	}
	cname = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
	if (cname == NULL)
	{
		Py_DECREF(name);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("rowid_column of the handler of \"%s\" must be a column name",
						RelationGetRelationName(rel))));
	}
	attnum = attnameAttNum(rel, cname, false);
	if (attnum == InvalidAttrNumber && strcmp(cname, "ctid") == 0)
	{
		/* the remote row's physical address, fetched by the scan as a system column */
		Py_DECREF(name);
		return SelfItemPointerAttributeNumber;
	}
	if (attnum <= 0)
	{
		char	   *copy = pstrdup(cname);

		Py_DECREF(name);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_COLUMN_NAME_NOT_FOUND),
				 errmsg("rowid_column \"%s\" is not a column of foreign table \"%s\"",
						copy, RelationGetRelationName(rel))));
	}
	Py_DECREF(name);
	return attnum;
}

static void
shoalAddForeignUpdateTargets(PlannerInfo *root, Index rtindex, RangeTblEntry *target_rte,
							 Relation target_relation)
{
	PyObject   *handler = shoal_handler_for(RelationGetRelid(target_relation));
	AttrNumber	attnum = rowid_attnum(handler, target_relation);
	Var		   *var;

	if (attnum == SelfItemPointerAttributeNumber)
		var = makeVar(rtindex, attnum, TIDOID, -1, InvalidOid, 0);
	else
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(target_relation), attnum - 1);

		var = makeVar(rtindex, attnum, att->atttypid, att->atttypmod, att->attcollation, 0);
	}

	add_row_identity_var(root, var, rtindex, ROWID_JUNK_NAME);
}

/* The columns a row is made of: not dropped, not generated. */
List *
shoal_live_attrs(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *attrs = NIL;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && !att->attgenerated)
			attrs = lappend_int(attrs, i + 1);
	}
	return attrs;
}

static List *
shoalPlanForeignModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation, int subplan_index)
{
	CmdType		operation = plan->operation;
	RangeTblEntry *rte = planner_rt_fetch(resultRelation, root);
	Relation	rel = table_open(rte->relid, NoLock);
	List	   *target_attrs = NIL;

	if (operation == CMD_INSERT)
		target_attrs = shoal_live_attrs(rel);
	else if (operation == CMD_UPDATE)
	{
		RelOptInfo *relinfo = find_base_rel(root, resultRelation);
		Bitmapset  *cols = get_rel_all_updated_cols(root, relinfo);
		int			col = -1;

		while ((col = bms_next_member(cols, col)) >= 0)
		{
			AttrNumber	attnum = col + FirstLowInvalidHeapAttributeNumber;

			if (attnum > 0 && !TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attgenerated)
				target_attrs = lappend_int(target_attrs, attnum);
		}
	}
	table_close(rel, NoLock);
	return list_make2(target_attrs,
					  makeBoolean(plan->returningLists != NIL));
}

static void
release_modify(void *arg)
{
	ShoalModifyState *state = arg;

	if (state->released)
		return;
	state->released = true;
	Py_CLEAR(state->handler);
	shoal_rowmap_release(&state->map);
}

/*
 * The ON CONFLICT clause of the statement: DO NOTHING goes to the handler
 * (begin_modify's on_conflict="nothing"), DO UPDATE to those that say
 * upsert = True (see upsert.c).
 */
static OnConflictAction
on_conflict(ModifyTableState *mtstate)
{
	if (mtstate == NULL || mtstate->ps.plan == NULL)
		return ONCONFLICT_NONE;
	return ((ModifyTable *) mtstate->ps.plan)->onConflictAction;
}

static PyObject *
begin_upsert(ShoalModifyState *state, ModifyTableState *mtstate, Relation rel)
{
	if (!shoal_handler_flag(state->handler, "upsert"))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("INSERT ... ON CONFLICT DO UPDATE is not supported for a row that goes to "
						"foreign table \"%s\"", RelationGetRelationName(rel)),
				 errhint("Its handler does not say upsert = True; ON CONFLICT DO NOTHING works.")));
	state->upsert = mtstate;
	return Py_BuildValue("{s:s,s:N}", "on_conflict", "update", "conflict_update",
						 shoal_upsert_clause(mtstate, list_length(state->target_attrs) + 1,
											 &state->upsert_exprs));
}

static ShoalModifyState *
begin_modify(ModifyTableState *mtstate, ResultRelInfo *rinfo, CmdType operation, List *target_attrs,
			 bool returning, bool explain_only, OnConflictAction conflict)
{
	Relation	rel = rinfo->ri_RelationDesc;
	ShoalModifyState *state = palloc0(sizeof(ShoalModifyState));
	PyObject   *result;
	const char *opname = operation == CMD_INSERT ? "INSERT" :
		operation == CMD_UPDATE ? "UPDATE" : "DELETE";

	state->operation = operation;
	state->target_attrs = target_attrs;
	state->all_attrs = shoal_live_attrs(rel);
	state->returning = returning;
	state->handler = Py_NewRef(shoal_handler_for(RelationGetRelid(rel)));
	state->cleanup.func = release_modify;
	state->cleanup.arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &state->cleanup);
	shoal_rowmap_init(&state->map, rel, state->all_attrs);
	state->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "shoal modify row",
										   ALLOCSET_SMALL_SIZES);
	state->batch_size = 1;
	/* one row at a time when rows may be skipped: the count of rows inserted stays exact */
	if (!returning && conflict == ONCONFLICT_NONE)
	{
		PyObject   *size = PyObject_GetAttrString(state->handler, "batch_size");
		long		n = size ? PyLong_AsLong(size) : -1;

		Py_XDECREF(size);
		if (n < 1 && PyErr_Occurred())
			shoal_python_raise("batch_size");
		state->batch_size = (int) Max(1, Min(n, 10000));
	}
	state->text_values = shoal_handler_flag(state->handler, "text_values");
	if (operation == CMD_INSERT && rinfo->ri_FdwState != NULL)
		((ShoalModifyState *) rinfo->ri_FdwState)->routed = state;
	else
		rinfo->ri_FdwState = state;
	if (explain_only)
		return state;

	shoal_xact_touch(state->handler);
	state->started = true;
	if (conflict == ONCONFLICT_NOTHING)
		result = shoal_call_method_kw(state->handler, "begin_modify", Py_BuildValue("(s)", opname),
									  Py_BuildValue("{s:s}", "on_conflict", "nothing"));
	else if (conflict == ONCONFLICT_UPDATE)
		result = shoal_call_method_kw(state->handler, "begin_modify", Py_BuildValue("(s)", opname),
									  begin_upsert(state, mtstate, rel));
	else
		result = shoal_call_method(state->handler, "begin_modify", Py_BuildValue("(s)", opname));
	Py_DECREF(result);
	return state;
}

static void
shoalBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo, List *fdw_private,
						int subplan_index, int eflags)
{
	ShoalModifyState *state;
	CmdType		operation = mtstate->operation;

	state = begin_modify(mtstate, rinfo, operation, linitial(fdw_private), boolVal(lsecond(fdw_private)),
						 (eflags & EXEC_FLAG_EXPLAIN_ONLY) != 0,
						 operation == CMD_INSERT ? on_conflict(mtstate) : ONCONFLICT_NONE);
	if (operation == CMD_UPDATE || operation == CMD_DELETE)
	{
		Plan	   *subplan = outerPlanState(mtstate)->plan;
		Relation	rel = rinfo->ri_RelationDesc;

		state->rowid_junk = ExecFindJunkAttributeInTlist(subplan->targetlist, ROWID_JUNK_NAME);
		if (!AttributeNumberIsValid(state->rowid_junk))
			elog(ERROR, "could not find the row id column \"%s\"", ROWID_JUNK_NAME);
		{
			AttrNumber	attnum = rowid_attnum(state->handler, rel);

			state->rowid_type = attnum == SelfItemPointerAttributeNumber ? TIDOID :
				TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;
		}
	}
}

static void
shoalBeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	begin_modify(mtstate, rinfo, CMD_INSERT, shoal_live_attrs(rinfo->ri_RelationDesc),
				 rinfo->ri_returningList != NIL, false, on_conflict(mtstate));
}

/*
 * Put what the handler returned for RETURNING into slot: a row, or binary
 * tuple data holding one tuple (decoded like a scan's).  None keeps slot as
 * it is.
 */
static void
store_binary_row(ShoalModifyState *state, PyObject *data, TupleTableSlot *slot)
{
	ShoalBinaryReader reader;

	shoal_binary_init(&reader);
	PG_TRY();
	{
		shoal_binary_feed(&reader, data);
		if (!shoal_binary_next(&reader, slot, state->map.io, state->map.nshort, state->map.short_map,
							   state->map.nlong, state->map.long_map))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_ERROR),
					 errmsg("the handler returned binary data without a whole row")));
	}
	PG_FINALLY();
	{
		shoal_binary_release(&reader);
	}
	PG_END_TRY();
}

static TupleTableSlot *
store_returned(ShoalModifyState *state, PyObject *returned, TupleTableSlot *slot)
{
	if (PyBytes_Check(returned) && PyBytes_GET_SIZE(returned) == 0)
	{
		/* empty binary data: no row was written (a conflict skipped it, or it was gone) */
		Py_DECREF(returned);
		return NULL;
	}
	if (returned != Py_None && state->returning)
	{
		MemoryContext old = MemoryContextSwitchTo(state->row_cxt);

		PG_TRY();
		{
			if (shoal_is_binary_chunk(returned))
				store_binary_row(state, returned, slot);
			else
				shoal_row_to_slot(&state->map, returned, slot);
		}
		PG_FINALLY();
		{
			MemoryContextSwitchTo(old);
			Py_DECREF(returned);
		}
		PG_END_TRY();
		return slot;
	}
	Py_DECREF(returned);
	return slot;
}

/* The state that inserts: a routed insert's own, if the table is also being updated. */
static ShoalModifyState *
insert_state(ResultRelInfo *rinfo)
{
	ShoalModifyState *state = rinfo->ri_FdwState;

	return state != NULL && state->routed != NULL ? state->routed : state;
}

static TupleTableSlot *
shoalExecForeignInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					   TupleTableSlot *planSlot)
{
	ShoalModifyState *state = insert_state(rinfo);
	PyObject   *values;
	PyObject   *returned;

	MemoryContextReset(state->row_cxt);
	values = shoal_slot_to_dict(slot, rinfo->ri_RelationDesc, state->target_attrs, state->text_values);
	if (state->upsert != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(state->row_cxt);
		PyObject   *clause_values;

		PG_TRY();
		{
			clause_values = shoal_upsert_values(state->upsert, state->upsert_exprs);
		}
		PG_CATCH();
		{
			Py_DECREF(values);
			PG_RE_THROW();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		returned = shoal_call_method(state->handler, "insert", Py_BuildValue("(NN)", values, clause_values));
	}
	else
		returned = shoal_call_method(state->handler, "insert", Py_BuildValue("(N)", values));
	return store_returned(state, returned, slot);
}

static TupleTableSlot **
shoalExecForeignBatchInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot **slots,
							TupleTableSlot **planSlots, int *numSlots)
{
	ShoalModifyState *state = insert_state(rinfo);
	PyObject   *rows = PyList_New(*numSlots);
	PyObject   *result;

	if (rows == NULL)
		shoal_python_raise("bulk_insert");
	PG_TRY();
	{
		for (int i = 0; i < *numSlots; i++)
			PyList_SET_ITEM(rows, i, shoal_slot_to_dict(slots[i], rinfo->ri_RelationDesc, state->target_attrs,
															   state->text_values));
	}
	PG_CATCH();
	{
		Py_DECREF(rows);
		PG_RE_THROW();
	}
	PG_END_TRY();
	result = shoal_call_method(state->handler, "bulk_insert", Py_BuildValue("(N)", rows));
	Py_DECREF(result);
	return slots;
}

static int
shoalGetForeignModifyBatchSize(ResultRelInfo *rinfo)
{
	ShoalModifyState *state = insert_state(rinfo);

	/* as postgres_fdw: no batches when rows must come back, or row triggers must see each */
	if (state == NULL || rinfo->ri_projectReturning != NULL ||
		(rinfo->ri_TrigDesc && (rinfo->ri_TrigDesc->trig_insert_before_row ||
								rinfo->ri_TrigDesc->trig_insert_after_row)))
		return 1;
	return state->batch_size;
}

static PyObject *
rowid_value(ShoalModifyState *state, TupleTableSlot *planSlot)
{
	bool		isnull;
	Datum		value = ExecGetJunkAttribute(planSlot, state->rowid_junk, &isnull);
	PyObject   *rowid;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the row id of a row to modify is NULL")));
	rowid = shoal_datum_to_py(value, false, state->rowid_type);
	if (rowid == NULL)
		shoal_python_raise("reading the row id");
	return rowid;
}

static TupleTableSlot *
shoalExecForeignUpdate(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					   TupleTableSlot *planSlot)
{
	ShoalModifyState *state = rinfo->ri_FdwState;
	PyObject   *rowid;
	PyObject   *values;
	PyObject   *returned;

	MemoryContextReset(state->row_cxt);
	rowid = rowid_value(state, planSlot);
	values = shoal_slot_to_dict(slot, rinfo->ri_RelationDesc, state->target_attrs, state->text_values);
	returned = shoal_call_method(state->handler, "update", Py_BuildValue("(NN)", rowid, values));
	return store_returned(state, returned, slot);
}

static TupleTableSlot *
shoalExecForeignDelete(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					   TupleTableSlot *planSlot)
{
	ShoalModifyState *state = rinfo->ri_FdwState;
	PyObject   *returned;

	MemoryContextReset(state->row_cxt);
	returned = shoal_call_method(state->handler, "delete",
								 Py_BuildValue("(N)", rowid_value(state, planSlot)));
	if (returned == Py_None && state->returning)
	{
		Py_DECREF(returned);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("DELETE ... RETURNING needs the handler's delete() to return the deleted row")));
	}
	return store_returned(state, returned, slot);
}

static void
end_state(ShoalModifyState *state)
{
	PyObject   *result;

	if (state == NULL || state->released)
		return;
	end_state(state->routed);
	/* the executor ends what EXPLAIN (without ANALYZE) only initialized: no end_modify then */
	if (state->started)
	{
		result = shoal_call_method(state->handler, "end_modify", NULL);
		Py_DECREF(result);
	}
	release_modify(state);
}

static void
shoalEndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
	end_state(rinfo->ri_FdwState);
}

static void
shoalEndForeignInsert(EState *estate, ResultRelInfo *rinfo)
{
	end_state(insert_state(rinfo));
}

static int
shoalIsForeignRelUpdatable(Relation rel)
{
	return (1 << CMD_INSERT) | (1 << CMD_UPDATE) | (1 << CMD_DELETE);
}

void
shoal_register_modify_callbacks(FdwRoutine *routine)
{
	routine->AddForeignUpdateTargets = shoalAddForeignUpdateTargets;
	routine->PlanForeignModify = shoalPlanForeignModify;
	routine->BeginForeignModify = shoalBeginForeignModify;
	routine->ExecForeignInsert = shoalExecForeignInsert;
	routine->ExecForeignBatchInsert = shoalExecForeignBatchInsert;
	routine->GetForeignModifyBatchSize = shoalGetForeignModifyBatchSize;
	routine->ExecForeignUpdate = shoalExecForeignUpdate;
	routine->ExecForeignDelete = shoalExecForeignDelete;
	routine->EndForeignModify = shoalEndForeignModify;
	routine->BeginForeignInsert = shoalBeginForeignInsert;
	routine->EndForeignInsert = shoalEndForeignInsert;
	routine->IsForeignRelUpdatable = shoalIsForeignRelUpdatable;
}
