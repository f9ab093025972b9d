/*-------------------------------------------------------------------------
 * plan.c
 *		Planning a scan of a shoal_fdw table: size, paths, plan.
 *
 * The handler estimates rows, says which orders it can return, which
 * equality lookups are cheap (parameterized paths) and whether it applies
 * LIMIT itself.  Clause shippability is quals.c's business.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/table.h"
#include "catalog/pg_am.h"
#include "commands/defrem.h"
#include "parser/parse_relation.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

typedef struct ShoalRelInfo
{
	PyObject   *handler;		/* borrowed from the handler cache */
	bool		exact;			/* handler enforces every qual it gets */
	bool		constants_as_params;	/* its clauses' SQL has $n for constants too */
	List	   *remote_conds;	/* RestrictInfos shipped */
	List	   *classified;		/* per baserestrictinfo: its ShoalQual, or NULL */
	List	   *params;			/* their $n, as classified */
	bool		reusable;		/* GetForeignPlan may reuse classified (no pseudoconstants) */
	List	   *local_conds;	/* RestrictInfos checked locally */
	Bitmapset  *attrs;			/* columns the scan must return */
	double		startup_cost;
	double		tuple_cost;
} ShoalRelInfo;

/* Path-level private data: sort keys (List) and pushed limit (Integer), in that order. */

static double
option_cost(List *options, const char *name, double dflt)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, name) == 0)
			return strtod(defGetString(def), NULL);
	}
	return dflt;
}

static void
collect_attrs(Bitmapset **attrs, Node *expr, Index relid)
{
	Bitmapset  *found = NULL;
	int			x = -1;

	pull_varattnos(expr, relid, &found);
	while ((x = bms_next_member(found, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;

		/* system columns (tableoid...) are the executor's business, not the handler's */
		if (attnum >= 0)
			*attrs = bms_add_member(*attrs, attnum);
	}
}

/* Does the scan output the row's ctid (an UPDATE or DELETE's row identity)? */
static bool
wants_ctid(RelOptInfo *baserel)
{
	Bitmapset  *found = NULL;

	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &found);
	return bms_is_member(SelfItemPointerAttributeNumber - FirstLowInvalidHeapAttributeNumber, found);
}

/* Is the handler's row id the remote ctid?  Then the scan must return it. */
static bool
rowid_is_ctid(Oid relid)
{
	PyObject   *name = PyObject_GetAttrString(shoal_handler_for(relid), "rowid_column");
	bool		result;

	if (name == NULL)
		shoal_python_raise("rowid_column");
	result = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "ctid") == 0;
	Py_DECREF(name);
	return result;
}

List *
shoal_attnum_list(Bitmapset *attrs)
{
	List	   *result = NIL;
	int			x = -1;

	while ((x = bms_next_member(attrs, x)) >= 0)
		result = lappend_int(result, x);
	return result;
}

/* Every user column of the relation, for whole-row references. */
static Bitmapset *
all_attrs(Relation rel)
{
	Bitmapset  *attrs = NULL;

	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
		if (!TupleDescAttr(RelationGetDescr(rel), i)->attisdropped)
			attrs = bms_add_member(attrs, i + 1);
	return attrs;
}

/* Columns needed: user columns only (attno > 0); a whole-row reference needs them all. */
static Bitmapset *
needed_columns(Bitmapset *raw, Relation rel)
{
	Bitmapset  *result = NULL;
	int			x = -1;

	while ((x = bms_next_member(raw, x)) >= 0)
	{
		if (x == 0)
			return all_attrs(rel);
		if (x > 0)
			result = bms_add_member(result, x);
	}
	return result;
}

void
shoalGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	ShoalRelInfo *info = palloc0(sizeof(ShoalRelInfo));
	Relation	rel;
	List	   *shipped = NIL;
	List	   *params = NIL;
	List	   *options;
	ListCell   *lc;
	Bitmapset  *raw = NULL;
	PyObject   *quals;
	PyObject   *columns;
	PyObject   *estimate;
	double		rows;
	long		width;

	baserel->fdw_private = info;
	info->handler = shoal_handler_for(foreigntableid);
	info->exact = shoal_handler_flag(info->handler, "exact_quals");
	info->constants_as_params = shoal_handler_flag(info->handler, "constants_as_params");
	options = shoal_table_options(foreigntableid);
	info->startup_cost = option_cost(options, "startup_cost", 100.0);
	info->tuple_cost = option_cost(options, "tuple_cost", 0.01);

	info->reusable = true;
	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *ri = lfirst_node(RestrictInfo, lc);
		ShoalQual  *q = shoal_classify_clause(root, baserel, ri->clause, &params,
												  info->constants_as_params);

		info->classified = lappend(info->classified, q);
		info->reusable &= !ri->pseudoconstant;
		if (q != NULL && (info->exact || q->kind != SHOAL_QUAL_OTHER))
			shipped = lappend(shipped, q);
		if (q != NULL && info->exact)
			info->remote_conds = lappend(info->remote_conds, ri);
		else
			info->local_conds = lappend(info->local_conds, ri);
	}
	info->params = params;

	collect_attrs(&raw, (Node *) baserel->reltarget->exprs, baserel->relid);
	foreach(lc, info->local_conds)
		collect_attrs(&raw, (Node *) lfirst_node(RestrictInfo, lc)->clause, baserel->relid);

	rel = table_open(foreigntableid, NoLock);
	info->attrs = needed_columns(raw, rel);
	quals = shoal_quals_to_py(shipped, rel, NULL, NULL, NULL, 0, info->exact, false);
	columns = shoal_column_names(rel, shoal_attnum_list(info->attrs));
	table_close(rel, NoLock);

	estimate = shoal_call_method(info->handler, "get_rel_size",
								 Py_BuildValue("(NN)", quals, columns));
	if (!PyArg_ParseTuple(estimate, "dl", &rows, &width))
	{
		Py_DECREF(estimate);
		shoal_python_raise("get_rel_size must return (rows, width)");
	}
	Py_DECREF(estimate);

	/* The handler's estimate is the scan's result: it saw the quals. */
	baserel->rows = clamp_row_est(rows);
	baserel->reltarget->width = (int) Max(width, 1);
}

/* The expression of an equivalence class that belongs to this relation, if any. */
static Expr *
ec_expr_for_rel(EquivalenceClass *ec, RelOptInfo *rel)
{
	ListCell   *lc;

	foreach(lc, ec->ec_members)
	{
		EquivalenceMember *em = lfirst(lc);

		if (bms_is_subset(em->em_relids, rel->relids) && !bms_is_empty(em->em_relids))
			return em->em_expr;
	}
	return NULL;
}

/* Python SortKeys for the query's pathkeys, or NULL if some key is not a plain column here. */
static PyObject *
sortkeys_for(PlannerInfo *root, RelOptInfo *baserel, Relation rel, List *pathkeys, List **private)
{
	PyObject   *keys = PyList_New(0);
	ListCell   *lc;

	*private = NIL;
	if (keys == NULL)
		shoal_python_raise("building sort keys");
	foreach(lc, pathkeys)
	{
		PathKey    *pk = lfirst(lc);
		Expr	   *expr = ec_expr_for_rel(pk->pk_eclass, baserel);
		Var		   *var;
		Oid			collation;
		char	   *collname;
		PyObject   *key;
		Oid			lt_opr;

		while (expr && IsA(expr, RelabelType))
			expr = ((RelabelType *) expr)->arg;
		if (expr == NULL || !IsA(expr, Var) || ((Var *) expr)->varattno <= 0 ||
			pk->pk_eclass->ec_has_volatile)
		{
			Py_DECREF(keys);
			return NULL;
		}
		var = (Var *) expr;
		/* only the type's default ordering: that is what ORDER BY column means remotely */
		lt_opr = get_opfamily_member(pk->pk_opfamily, var->vartype, var->vartype,
									 BTLessStrategyNumber);
		if (!OidIsValid(lt_opr) || pk->pk_opfamily != get_opclass_family(GetDefaultOpClass(var->vartype, BTREE_AM_OID)))
		{
			Py_DECREF(keys);
			return NULL;
		}
		collation = pk->pk_eclass->ec_collation;
		collname = OidIsValid(collation) ? get_collation_name(collation) : NULL;
		key = PyObject_CallFunction(shoal_host_attr("SortKey"), "NiOON",
									shoal_cstring_to_py(NameStr(TupleDescAttr(RelationGetDescr(rel),
																			  var->varattno - 1)->attname)),
									(int) var->varattno,
									pk->pk_strategy == BTGreaterStrategyNumber ? Py_True : Py_False,
									pk->pk_nulls_first ? Py_True : Py_False,
									collname ? shoal_cstring_to_py(collname) : Py_NewRef(Py_None));
		if (key == NULL || PyList_Append(keys, key) < 0)
		{
			Py_XDECREF(key);
			Py_DECREF(keys);
			shoal_python_raise("building sort keys");
		}
		Py_DECREF(key);
		*private = lappend(*private,
						   list_make4(makeInteger(var->varattno),
									  makeBoolean(pk->pk_strategy == BTGreaterStrategyNumber),
									  makeBoolean(pk->pk_nulls_first),
									  makeString(collname ? collname : pstrdup(""))));
	}
	return keys;
}

/*
 * LIMIT (plus OFFSET) the scan may stop at, or -1.  Safe only when the scan
 * is all the query reads, every qual is enforced by the handler, and
 * nothing between the scan and the Limit drops or multiplies rows.
 */
static int64
pushable_limit(PlannerInfo *root, RelOptInfo *baserel, ShoalRelInfo *info)
{
	Query	   *parse = root->parse;
	int64		count;
	int64		offset = 0;

	if (!info->exact || info->local_conds != NIL || parse->limitCount == NULL ||
		parse->commandType != CMD_SELECT)
		return -1;
	if (parse->groupClause || parse->groupingSets || parse->hasAggs || parse->havingQual ||
		parse->distinctClause || parse->hasWindowFuncs || parse->hasTargetSRFs ||
		parse->setOperations || parse->limitOption != LIMIT_OPTION_COUNT || parse->rowMarks)
		return -1;
	if (bms_membership(root->all_baserels) != BMS_SINGLETON)
		return -1;
	if (!IsA(parse->limitCount, Const) ||
		(parse->limitOffset && !IsA(parse->limitOffset, Const)))
		return -1;
	if (((Const *) parse->limitCount)->constisnull)
		return -1;
	count = DatumGetInt64(((Const *) parse->limitCount)->constvalue);
	if (parse->limitOffset && !((Const *) parse->limitOffset)->constisnull)
		offset = DatumGetInt64(((Const *) parse->limitOffset)->constvalue);
	if (count < 0 || offset < 0 || count > PG_INT64_MAX - offset)
		return -1;
	/* an appendrel child's own quals (partition constraints) are enforced remotely too */
	return count + offset;
}

static bool
handler_can_limit(ShoalRelInfo *info, int64 limit)
{
	PyObject   *answer = shoal_call_method(info->handler, "can_limit",
										   Py_BuildValue("(LO)", (long long) limit, Py_None));
	int			truth = PyObject_IsTrue(answer);

	Py_DECREF(answer);
	return truth == 1;
}

static ForeignPath *
make_path(PlannerInfo *root, RelOptInfo *baserel, ShoalRelInfo *info, double rows,
		  List *pathkeys, Relids required_outer, List *sort_private, int64 limit)
{
	double		run_rows = limit >= 0 ? Min(rows, (double) limit) : rows;
	Cost		startup = info->startup_cost;
	Cost		total = startup + run_rows * (info->tuple_cost + cpu_tuple_cost);

	if (pathkeys != NIL)
		total += run_rows * cpu_operator_cost;	/* the handler sorts */
	return create_foreignscan_path(root, baserel, NULL, rows, startup, total, pathkeys,
								   required_outer, NULL,
								   list_make2(sort_private, makeInteger((int) Min(limit, PG_INT32_MAX))));
}

typedef struct JoinColumnArg
{
	AttrNumber	attnum;
} JoinColumnArg;

static bool
ec_matches_column(PlannerInfo *root, RelOptInfo *rel, EquivalenceClass *ec,
				  EquivalenceMember *em, void *arg)
{
	Expr	   *expr = em->em_expr;

	while (expr && IsA(expr, RelabelType))
		expr = ((RelabelType *) expr)->arg;
	return expr && IsA(expr, Var) && ((Var *) expr)->varno == rel->relid &&
		((Var *) expr)->varattno == ((JoinColumnArg *) arg)->attnum;
}

/* column = expression of other relations, with an equality operator */
static bool
is_column_equality(RestrictInfo *ri, Index relid, AttrNumber attnum)
{
	OpExpr	   *op;
	AttrNumber	found;
	Node	   *other;

	if (!IsA(ri->clause, OpExpr) || list_length(((OpExpr *) ri->clause)->args) != 2)
		return false;
	op = (OpExpr *) ri->clause;
	if (!op_mergejoinable(op->opno, exprType(linitial(op->args))) &&
		!op_hashjoinable(op->opno, exprType(linitial(op->args))))
		return false;
	if (IsA(linitial(op->args), Var) && ((Var *) linitial(op->args))->varno == relid)
	{
		found = ((Var *) linitial(op->args))->varattno;
		other = lsecond(op->args);
	}
	else if (IsA(lsecond(op->args), Var) && ((Var *) lsecond(op->args))->varno == relid)
	{
		found = ((Var *) lsecond(op->args))->varattno;
		other = linitial(op->args);
	}
	else
		return false;
	return found == attnum && !bms_is_member(relid, pull_varnos(NULL, other));
}

/* Parameterized paths: the handler says an equality on these columns is cheap. */
static void
add_parameterized_paths(PlannerInfo *root, RelOptInfo *baserel, ShoalRelInfo *info, Relation rel)
{
	PyObject   *keys = shoal_call_method(info->handler, "get_path_keys", NULL);
	PyObject   *iter = PyObject_GetIter(keys);
	PyObject   *item;

	Py_DECREF(keys);
	if (iter == NULL)
		shoal_python_raise("get_path_keys");
	while ((item = PyIter_Next(iter)) != NULL)
	{
		ListCell   *lc;
		PyObject   *cols;
		double		rows;
		Relids		outer = NULL;
		List	   *clauses = NIL;
		bool		usable = true;
		PyObject   *col_iter;
		PyObject   *col;

		if (!PyArg_ParseTuple(item, "Od", &cols, &rows) || (col_iter = PyObject_GetIter(cols)) == NULL)
		{
			Py_DECREF(item);
			Py_DECREF(iter);
			shoal_python_raise("get_path_keys must yield (columns, rows) pairs");
		}
		while (usable && (col = PyIter_Next(col_iter)) != NULL)
		{
			const char *name = PyUnicode_AsUTF8(col);
			AttrNumber	attnum = name ? attnameAttNum(rel, name, false) : InvalidAttrNumber;
			JoinColumnArg arg = {attnum};
			List	   *found;

			Py_DECREF(col);
			if (attnum <= 0)
			{
				usable = false;
				break;
			}
			found = generate_implied_equalities_for_column(root, baserel, ec_matches_column,
														   &arg, baserel->lateral_referencers);
			/* plain join clauses that are not in an equivalence class */
			foreach(lc, baserel->joininfo)
			{
				RestrictInfo *ri = lfirst_node(RestrictInfo, lc);

				if (is_column_equality(ri, baserel->relid, attnum))
					found = lappend(found, ri);
			}
			if (found == NIL)
			{
				usable = false;
				break;
			}
			/* one clause per column is enough to look the rows up */
			clauses = lappend(clauses, linitial(found));
			outer = bms_union(outer, bms_difference(((RestrictInfo *) linitial(found))->clause_relids,
													baserel->relids));
		}
		Py_DECREF(col_iter);
		Py_DECREF(item);
		if (PyErr_Occurred())
		{
			Py_DECREF(iter);
			shoal_python_raise("get_path_keys");
		}
		if (usable && clauses != NIL && !bms_is_empty(outer) &&
			!bms_overlap(outer, baserel->relids))
		{
			ParamPathInfo *ppi = get_baserel_parampathinfo(root, baserel, outer);
			ForeignPath *path = make_path(root, baserel, info, rows, NIL, outer, NIL, -1);

			path->path.param_info = ppi;
			add_path(baserel, (Path *) path);
		}
	}
	Py_DECREF(iter);
	if (PyErr_Occurred())
		shoal_python_raise("get_path_keys");
	shoal_pgmodule_check();
}

void
shoalGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	ShoalRelInfo *info = baserel->fdw_private;
	Relation	rel = table_open(foreigntableid, NoLock);
	int64		limit = pushable_limit(root, baserel, info);
	bool		sorted_query = root->parse->sortClause != NIL;

	PG_TRY();
	{
		/* unordered: may carry the limit only if the query wants no order */
		int64		plain_limit = (!sorted_query && limit >= 0 &&
								   handler_can_limit(info, limit)) ? limit : -1;

		add_path(baserel, (Path *) make_path(root, baserel, info, baserel->rows, NIL, NULL, NIL,
											 plain_limit));

		if (root->query_pathkeys != NIL)
		{
			List	   *sort_private;
			PyObject   *wanted = sortkeys_for(root, baserel, rel, root->query_pathkeys, &sort_private);

			if (wanted != NULL)
			{
				Py_ssize_t	nwanted = PyList_GET_SIZE(wanted);
				PyObject   *granted = shoal_call_method(info->handler, "can_sort",
														Py_BuildValue("(O)", wanted));
				Py_ssize_t	ngranted = PySequence_Size(granted);

				Py_DECREF(granted);
				Py_DECREF(wanted);
				if (ngranted < 0)
					shoal_python_raise("can_sort must return a list");
				if (ngranted == nwanted)
				{
					int64		sorted_limit = (limit >= 0 && handler_can_limit(info, limit)) ? limit : -1;

					add_path(baserel, (Path *) make_path(root, baserel, info, baserel->rows,
														 root->query_pathkeys, NULL, sort_private,
														 sorted_limit));
				}
			}
		}
		add_parameterized_paths(root, baserel, info, rel);
	}
	PG_FINALLY();
	{
		table_close(rel, NoLock);
	}
	PG_END_TRY();
}

/* Whether two lists hold the same pointers in the same order. */
static bool
equal_pointers(List *a, List *b)
{
	ListCell   *la;
	ListCell   *lb;

	if (list_length(a) != list_length(b))
		return false;
	forboth(la, a, lb, b)
	{
		if (lfirst(la) != lfirst(lb))
			return false;
	}
	return true;
}

ForeignScan *
shoalGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
					ForeignPath *best_path, List *tlist, List *scan_clauses, Plan *outer_plan)
{
	ShoalRelInfo *info = baserel->fdw_private;
	List	   *path_private = best_path->fdw_private;
	List	   *quals = NIL;
	List	   *params = NIL;
	List	   *local_exprs = NIL;
	List	   *columns = NIL;
	Bitmapset  *raw = NULL;
	Relation	rel;
	ListCell   *lc;

	/* the clauses classified for the size estimate, unless a parameterized path added some */
	bool		reuse = info->reusable && equal_pointers(scan_clauses, baserel->baserestrictinfo);

	if (reuse)
		params = info->params;
	foreach(lc, scan_clauses)
	{
		RestrictInfo *ri = lfirst_node(RestrictInfo, lc);
		ShoalQual  *q;

		if (ri->pseudoconstant)
			continue;
		if (reuse)
			q = list_nth(info->classified, foreach_current_index(lc));
		else
			q = shoal_classify_clause(root, baserel, ri->clause, &params, info->constants_as_params);
		if (q != NULL && (info->exact || q->kind != SHOAL_QUAL_OTHER))
			quals = lappend(quals, q);
		if (q == NULL || !info->exact)
			local_exprs = lappend(local_exprs, ri->clause);
	}

	/* columns: the target list, the rows' identity for UPDATE/DELETE, and what local quals read */
	collect_attrs(&raw, (Node *) baserel->reltarget->exprs, baserel->relid);
	collect_attrs(&raw, (Node *) local_exprs, baserel->relid);
	rel = table_open(foreigntableid, NoLock);
	columns = shoal_attnum_list(needed_columns(raw, rel));
	if (wants_ctid(baserel) && rowid_is_ctid(foreigntableid))
		columns = lappend_int(columns, SelfItemPointerAttributeNumber);
	table_close(rel, NoLock);

	return make_foreignscan(tlist, local_exprs, baserel->relid, params,
							list_make5(columns,
									   shoal_quals_to_private(quals),
									   linitial(path_private),
									   lsecond(path_private),
									   makeInteger(info->exact)),
							NIL, NIL, outer_plan);
}
