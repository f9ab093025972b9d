/*-------------------------------------------------------------------------
 * upsert.c
 *		INSERT ... ON CONFLICT DO UPDATE for rows routed to a foreign partition.
 *
 * PostgreSQL hands a foreign table's rows to ExecForeignInsert and leaves
 * ON CONFLICT to the wrapper.  A handler that says `upsert = True` gets the
 * clause as SQL its node evaluates: the new value of each column the SET
 * changes and the WHERE condition, deparsed by ruleutils as EXPLAIN shows
 * them, with the existing row named by the statement's alias for the table
 * and the proposed one `excluded`.
 *
 * Parts that read neither row (a parameter, now(), a constant expression)
 * are evaluated here, once per row, and travel as parameters numbered
 * after the inserted values, so stable functions mean what they mean on
 * this node; so are uncorrelated subqueries (their results are parameters
 * of the plan already).  What reads a row must be shippable like a qual:
 * built-in immutable operators and functions; correlated subqueries are
 * refused.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"

#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

/*
 * The planner's half.  PostgreSQL allows no unique index on a partitioned
 * table with foreign partitions, so it cannot infer the conflict target of
 * INSERT ... ON CONFLICT (columns) on such a parent.  The planner gets the
 * statement without it: each local partition then checks all its unique
 * constraints, which all include the distribution key.  A row that goes to
 * a foreign partition goes as an INSERT ... ON CONFLICT of its own, which
 * must name one of the remote table's unique constraints: the columns the
 * statement named travel in the plan for it, in the ModifyTable's
 * fdw_private for the parent, which PostgreSQL never reads (a partitioned
 * table has no FDW), tagged as ours.
 */
#define CONFLICT_TARGET_TAG "shoal: conflict target"

/*
 * Whether the first plain-table partition of relid has a unique index on
 * exactly these columns (without predicate or expression), as PostgreSQL's
 * inference asks of a table; true if every partition is foreign (their
 * handlers check the remote tables).  Its local rows get the same answer
 * as its remote ones: shoal's partitions all have the same unique keys.
 */
static bool
local_partition_has_key(Oid relid, List *columns)
{
	ListCell   *lc;

	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
	{
		Oid			part = lfirst_oid(lc);
		Relation	rel;
		List	   *indexes;
		ListCell   *lc2;
		bool		found = false;

		if (get_rel_relkind(part) != RELKIND_RELATION)
			continue;
		rel = table_open(part, AccessShareLock);
		indexes = RelationGetIndexList(rel);
		foreach(lc2, indexes)
		{
			HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc2)));
			Form_pg_index index;

			if (!HeapTupleIsValid(tuple))
				continue;
			index = (Form_pg_index) GETSTRUCT(tuple);
			if (index->indisunique && index->indnkeyatts == list_length(columns) &&
				heap_attisnull(tuple, Anum_pg_index_indexprs, NULL) &&
				heap_attisnull(tuple, Anum_pg_index_indpred, NULL))
			{
				found = true;
				for (int i = 0; i < index->indnkeyatts && found; i++)
				{
					char	   *name = get_attname(part, index->indkey.values[i], false);
					ListCell   *lc3;

					found = false;
					foreach(lc3, columns)
						found = found || strcmp(strVal(lfirst(lc3)), name) == 0;
				}
			}
			ReleaseSysCache(tuple);
			if (found)
				break;
		}
		list_free(indexes);
		table_close(rel, AccessShareLock);
		return found;
	}
	return true;
}

/*
 * The target of one INSERT ... ON CONFLICT query, removed if its table is
 * such a parent: the list to keep in its ModifyTable, NIL if none.
 */
static List *
take_one_target(Query *query)
{
	OnConflictExpr *clause = query->onConflict;
	RangeTblEntry *rte;
	List	   *columns = NIL;
	ListCell   *lc;
	ListCell   *lc2;
	char	   *name;

	if (query->commandType != CMD_INSERT || clause == NULL ||
		(clause->arbiterElems == NIL && !OidIsValid(clause->constraint)))
		return NIL;
	rte = rt_fetch(query->resultRelation, query->rtable);
	if (rte->relkind != RELKIND_PARTITIONED_TABLE || !shoal_has_foreign_partitions(rte->relid))
		return NIL;
	foreach(lc, clause->arbiterElems)
	{
		InferenceElem *elem = lfirst_node(InferenceElem, lc);
		Var		   *var = (Var *) elem->expr;

		if (!IsA(var, Var) || var->varno != query->resultRelation || var->varattno <= 0)
		{
			columns = NIL;		/* an expression: no remote constraint can match it */
			break;
		}
		name = get_attname(rte->relid, var->varattno, false);
		foreach(lc2, columns)
			if (strcmp(strVal(lfirst(lc2)), name) == 0)
				break;
		if (lc2 == NULL)		/* (id, id) means (id) */
			columns = lappend(columns, makeString(name));
	}
	/* as PostgreSQL would refuse it on the parent (a partial index's predicate is not checked) */
	if (clause->action == ONCONFLICT_UPDATE && columns != NIL && clause->arbiterWhere == NULL &&
		!local_partition_has_key(rte->relid, columns))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("there is no unique or exclusion constraint matching the ON CONFLICT specification")));
	query->onConflict = copyObject(clause);
	query->onConflict->arbiterElems = NIL;
	query->onConflict->arbiterWhere = NULL;
	query->onConflict->constraint = InvalidOid;
	return list_make3(makeString(CONFLICT_TARGET_TAG), columns, makeInteger((int) rte->relid));
}

/*
 * Remove the conflict targets of the statement and of its data-modifying
 * WITH queries where their table is such a parent; the targets to keep in
 * the plan (see shoal_upsert_keep_target), NIL if none.
 */
List *
shoal_upsert_take_target(Query *parse)
{
	List	   *targets = NIL;
	List	   *inserted = NIL; /* the tables every INSERT of the statement writes */
	List	   *target = take_one_target(parse);
	ListCell   *lc;

	if (target != NIL)
		targets = lappend(targets, target);
	if (parse->commandType == CMD_INSERT)
		inserted = lappend_oid(inserted, rt_fetch(parse->resultRelation, parse->rtable)->relid);
	foreach(lc, parse->cteList)
	{
		CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);
		Query	   *query = (Query *) cte->ctequery;

		if (!IsA(query, Query) || query->commandType != CMD_INSERT)
			continue;
		inserted = lappend_oid(inserted, rt_fetch(query->resultRelation, query->rtable)->relid);
		if ((target = take_one_target(query)) != NIL)
			targets = lappend(targets, target);
	}

	/*
	 * A foreign partition's handler holds one statement's ON CONFLICT clause
	 * at a time: two INSERTs into the table, interleaved, would mix theirs.
	 */
	foreach(lc, targets)
	{
		Oid			relid = (Oid) intVal(lthird((List *) lfirst(lc)));
		int			writers = 0;
		ListCell   *lc2;

		foreach(lc2, inserted)
			writers += lfirst_oid(lc2) == relid;
		if (writers > 1)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("INSERT ... ON CONFLICT into \"%s\" with another INSERT into it in the same "
							"statement is not supported", get_rel_name(relid)),
					 errdetail("The table has partitions on other nodes."),
					 errhint("Run the INSERTs as separate statements.")));
	}
	return targets;
}

/* Keep target in plan if it is the ModifyTable of target's table, and keeps none yet. */
static bool
keep_in(PlannedStmt *stmt, Plan *plan, List *target)
{
	ModifyTable *mt = (ModifyTable *) plan;
	Oid			relid = (Oid) intVal(lthird(target));

	if (plan == NULL || !IsA(plan, ModifyTable) || mt->onConflictAction == ONCONFLICT_NONE ||
		list_length(mt->fdwPrivLists) != 1 || linitial(mt->fdwPrivLists) != NIL ||
		rt_fetch(linitial_int(mt->resultRelations), stmt->rtable)->relid != relid)
		return false;
	linitial(mt->fdwPrivLists) = target;
	return true;
}

void
shoal_upsert_keep_target(PlannedStmt *stmt, List *targets)
{
	ListCell   *lc;

	/* in the order they were taken: the statement's own first, then its WITH queries' */
	foreach(lc, targets)
	{
		List	   *target = lfirst(lc);
		ListCell   *lc2;

		if (keep_in(stmt, stmt->planTree, target))
			continue;
		foreach(lc2, stmt->subplans)
			if (keep_in(stmt, lfirst(lc2), target))
				break;
	}
}

/*
 * The conflict target kept in the plan: a list of column names (empty if it
 * has an expression), or None if the plan kept none.
 */
static PyObject *
conflict_target(ModifyTable *mt)
{
	List	   *kept = mt->fdwPrivLists != NIL ? linitial(mt->fdwPrivLists) : NIL;
	PyObject   *columns;
	ListCell   *lc;

	if (list_length(kept) != 3 || !IsA(linitial(kept), String) ||
		strcmp(strVal(linitial(kept)), CONFLICT_TARGET_TAG) != 0)
		Py_RETURN_NONE;
	columns = PyList_New(0);
	if (columns == NULL)
		shoal_python_raise("ON CONFLICT DO UPDATE");
	foreach(lc, (List *) lsecond(kept))
	{
		PyObject   *name = shoal_cstring_to_py(strVal(lfirst(lc)));

		if (PyList_Append(columns, name) < 0)
		{
			Py_DECREF(name);
			Py_DECREF(columns);
			shoal_python_raise("ON CONFLICT DO UPDATE");
		}
		Py_DECREF(name);
	}
	return columns;
}

typedef struct LocalizeContext
{
	Index		rti;			/* the target table's range-table index */
	int			first;			/* number of the first parameter */
	List	   *exprs;			/* what each parameter is, in order */
} LocalizeContext;

static Node *
localize_mutator(Node *node, LocalizeContext *ctx)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, SubPlan) || IsA(node, AlternativeSubPlan) || IsA(node, SubLink))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a subquery in ON CONFLICT DO UPDATE is not supported for rows that go to a "
						"foreign partition")));
	if (shoal_evaluates_here(node, ctx->rti, false))
	{
		Param	   *param = makeNode(Param);

		param->paramkind = PARAM_EXTERN;
		param->paramid = ctx->first + list_length(ctx->exprs);
		param->paramtype = exprType(node);
		param->paramtypmod = exprTypmod(node);
		param->paramcollid = exprCollation(node);
		param->location = -1;
		ctx->exprs = lappend(ctx->exprs, node);
		return (Node *) param;
	}
	return expression_tree_mutator(node, localize_mutator, (void *) ctx);
}

/* The remote SQL of expr, or an error naming what cannot be sent. */
static char *
remote_expr(Node *expr, LocalizeContext *ctx, List *dpcontext, const char *what)
{
	Node	   *remote = localize_mutator(expr, ctx);

	if (!shoal_expr_ships(remote, ctx->rti))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s of ON CONFLICT DO UPDATE cannot be evaluated on the node of a foreign "
						"partition", what),
				 errdetail("Only built-in immutable operators and functions can be applied to the "
						   "existing or the proposed row there."),
				 errhint("What depends on session settings (a timestamptz as text, now()) is computed "
						 "here only when it reads neither row.")));
	return shoal_deparse_portable(remote, dpcontext, true);
}

/*
 * The ON CONFLICT DO UPDATE clause of mtstate's statement, for the handler
 * (a dict: alias, set, where, types), with the parameters it needs
 * numbered from first; *exprs gets their ExprStates, to evaluate per row.
 */
PyObject *
shoal_upsert_clause(ModifyTableState *mtstate, int first, List **exprs)
{
	ModifyTable *mt = (ModifyTable *) mtstate->ps.plan;
	EState	   *estate = mtstate->ps.state;
	LocalizeContext ctx = {linitial_int(mt->resultRelations), first, NIL};
	Relation	root = mtstate->rootResultRelInfo ? mtstate->rootResultRelInfo->ri_RelationDesc
		: mtstate->resultRelInfo->ri_RelationDesc;
	Bitmapset  *used = bms_make_singleton(ctx.rti);
	List	   *names;
	List	   *dpcontext;
	const char *alias;
	char	   *where = NULL;
	PyObject   *assignments;
	PyObject   *types;
	PyObject   *result;
	ListCell   *lc;
	ListCell   *lc2;
	char	   *identity = NULL;

	if (mt->exclRelRTI > 0)
		used = bms_add_member(used, mt->exclRelRTI);
	names = select_rtable_names_for_explain(estate->es_plannedstmt->rtable, used);
	alias = list_nth(names, ctx.rti - 1);
	if (mt->exclRelRTI > 0 && strcmp(list_nth(names, mt->exclRelRTI - 1), "excluded") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ON CONFLICT DO UPDATE for rows that go to a foreign partition needs another "
						"alias than \"excluded\" for the table")));
	dpcontext = set_deparse_context_plan(deparse_context_for_plan_tree(estate->es_plannedstmt, names),
										 (Plan *) mt, NIL);

	/* the SET: each column it changes (the planner lists them all, unchanged ones as themselves) */
	assignments = PyDict_New();
	if (assignments == NULL)
		shoal_python_raise("ON CONFLICT DO UPDATE");
	PG_TRY();
	{
		forboth(lc, mt->onConflictSet, lc2, mt->onConflictCols)
		{
			TargetEntry *te = lfirst_node(TargetEntry, lc);
			AttrNumber	attnum = lfirst_int(lc2);
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(root), attnum - 1);
			Var		   *var = (Var *) te->expr;
			PyObject   *sql;

			if (te->resjunk || att->attisdropped || att->attgenerated)
				continue;
			if (IsA(var, Var) && var->varno == ctx.rti && var->varattno == attnum && var->varlevelsup == 0)
			{
				if (identity == NULL)
					identity = psprintf("%s.%s", quote_identifier(alias),
										quote_identifier(NameStr(att->attname)));
				continue;
			}
			sql = shoal_cstring_to_py(remote_expr((Node *) te->expr, &ctx, dpcontext, "the SET"));
			if (PyDict_SetItemString(assignments, NameStr(att->attname), sql) < 0)
			{
				Py_DECREF(sql);
				shoal_python_raise("ON CONFLICT DO UPDATE");
			}
			Py_DECREF(sql);
		}
		if (PyDict_Size(assignments) == 0 && identity != NULL)
		{
			/* nothing changes, but the row still counts (and locks) as updated */
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(root),
												  linitial_int(mt->onConflictCols) - 1);
			PyObject   *sql = shoal_cstring_to_py(identity);

			PyDict_SetItemString(assignments, NameStr(att->attname), sql);
			Py_DECREF(sql);
		}
		if (mt->onConflictWhere != NULL)
			where = remote_expr((Node *) make_ands_explicit((List *) mt->onConflictWhere), &ctx,
								dpcontext, "the WHERE");
	}
	PG_CATCH();
	{
		Py_DECREF(assignments);
		PG_RE_THROW();
	}
	PG_END_TRY();

	types = PyList_New(0);
	if (types == NULL)
	{
		Py_DECREF(assignments);
		shoal_python_raise("ON CONFLICT DO UPDATE");
	}
	*exprs = NIL;
	foreach(lc, ctx.exprs)
	{
		PyObject   *type = PyLong_FromUnsignedLong(exprType(lfirst(lc)));

		if (type == NULL || PyList_Append(types, type) < 0)
		{
			Py_XDECREF(type);
			Py_DECREF(types);
			Py_DECREF(assignments);
			shoal_python_raise("ON CONFLICT DO UPDATE");
		}
		Py_DECREF(type);
		*exprs = lappend(*exprs, ExecInitExpr(lfirst(lc), &mtstate->ps));
	}
	result = Py_BuildValue("{s:s,s:N,s:s,s:N,s:N}", "alias", alias, "set", assignments, "where", where,
						   "types", types, "target", conflict_target(mt));
	if (result == NULL)
		shoal_python_raise("ON CONFLICT DO UPDATE");
	return result;
}

/* The values of the clause's parameters for one row, in their types' text form. */
PyObject *
shoal_upsert_values(ModifyTableState *mtstate, List *exprs)
{
	ExprContext *econtext = mtstate->ps.ps_ExprContext;
	PyObject   *values = PyList_New(list_length(exprs));
	int			nestlevel;
	int			i = 0;
	ListCell   *lc;

	if (values == NULL)
		shoal_python_raise("ON CONFLICT DO UPDATE");
	nestlevel = shoal_portable_output_begin();
	PG_TRY();
	{
		foreach(lc, exprs)
		{
			ExprState  *state = lfirst(lc);
			bool		isnull;
			Datum		value = ExecEvalExpr(state, econtext, &isnull);
			PyObject   *text = shoal_datum_to_text_py(value, isnull, exprType((Node *) state->expr));

			if (text == NULL)
				shoal_python_raise("ON CONFLICT DO UPDATE");
			PyList_SET_ITEM(values, i++, text);
		}
	}
	PG_CATCH();
	{
		Py_DECREF(values);
		PG_RE_THROW();
	}
	PG_END_TRY();
	shoal_portable_output_end(nestlevel);
	return values;
}
