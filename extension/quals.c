/*-------------------------------------------------------------------------
 * quals.c
 *		Which restriction clauses can be handed to a handler, and in what form.
 *
 * A clause ships when what it computes from this table's columns uses
 * only built-in immutable operators and functions with collations that
 * mean the same on the other side.  What it computes from anything else
 * (parameters, a PL/pgSQL variable's array element, now(), the outer
 * relation of a parameterized path) is evaluated here, once per scan, and
 * travels as a parameter $n; so does every constant if the handler wants
 * one remote plan per statement shape.  Each shipped clause gets its SQL
 * text, deparsed by PostgreSQL's own ruleutils; a clause of the simple
 * form `column op value` also becomes a Multicorn-style qual.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/transam.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

typedef struct ShipContext
{
	Index		relid;			/* the scanned relation's range-table index */
	bool		inner_is_row;	/* INNER_VAR: the row ON CONFLICT proposes, named there too */
} ShipContext;

static bool
is_builtin(Oid oid)
{
	return oid < FirstGenbkiObjectId;
}

static bool
collation_ships(Oid collid)
{
	/* Column collations are declared alike on every node; explicit others may not exist there. */
	return collid == InvalidOid || collid == DEFAULT_COLLATION_OID ||
		collid == C_COLLATION_OID || collid == POSIX_COLLATION_OID;
}

static bool
function_ships(Oid funcid)
{
	return is_builtin(funcid) && func_volatile(funcid) == PROVOLATILE_IMMUTABLE;
}

static bool
ships_walker(Node *node, ShipContext *ctx)
{
	if (node == NULL)
		return false;

	switch (nodeTag(node))
	{
		case T_Var:
			{
				Var		   *var = (Var *) node;

				if (var->varlevelsup != 0)
					return true;
				if (var->varno == ctx->relid || (ctx->inner_is_row && var->varno == INNER_VAR))
					return var->varattno <= 0;	/* system columns and whole rows stay local */
				/* another relation's value: sent as a parameter */
				return !is_builtin(var->vartype);
			}
		case T_Const:
			return !is_builtin(((Const *) node)->consttype);
		case T_Param:
			{
				Param	   *param = (Param *) node;

				if (param->paramkind != PARAM_EXTERN && param->paramkind != PARAM_EXEC)
					return true;
				return !is_builtin(param->paramtype);
			}
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			{
				OpExpr	   *op = (OpExpr *) node;

				set_opfuncid(op);
				if (!is_builtin(op->opno) || !function_ships(op->opfuncid) ||
					!collation_ships(op->inputcollid))
					return true;
				break;
			}
		case T_ScalarArrayOpExpr:
			{
				ScalarArrayOpExpr *op = (ScalarArrayOpExpr *) node;

				set_sa_opfuncid(op);
				if (!is_builtin(op->opno) || !function_ships(op->opfuncid) ||
					!collation_ships(op->inputcollid))
					return true;
				break;
			}
		case T_FuncExpr:
			{
				FuncExpr   *func = (FuncExpr *) node;

				if (!function_ships(func->funcid) || !collation_ships(func->inputcollid))
					return true;
				break;
			}
		case T_RelabelType:
			if (!is_builtin(((RelabelType *) node)->resulttype))
				return true;
			break;
		case T_CoerceViaIO:
			/* the I/O functions' volatility is contain_mutable_functions' to check */
			if (!is_builtin(((CoerceViaIO *) node)->resulttype))
				return true;
			break;
		case T_ArrayExpr:
			if (!is_builtin(((ArrayExpr *) node)->array_typeid))
				return true;
			break;
		case T_SubscriptingRef:
			{
				SubscriptingRef *ref = (SubscriptingRef *) node;

				/* reading an element of a built-in container: arrays, jsonb */
				if (!is_builtin(ref->refcontainertype) || !is_builtin(ref->refrestype) ||
					ref->refassgnexpr != NULL)
					return true;
				break;
			}
		case T_MinMaxExpr:
			if (!is_builtin(((MinMaxExpr *) node)->minmaxtype) ||
				!collation_ships(((MinMaxExpr *) node)->inputcollid))
				return true;
			break;
		case T_CaseExpr:
		case T_CoalesceExpr:
			if (!is_builtin(exprType(node)))
				return true;
			break;
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_List:
			break;
		default:
			return true;
	}
	return expression_tree_walker(node, ships_walker, (void *) ctx);
}

static bool
reads_row_walker(Node *node, Index *rti)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
		return ((Var *) node)->varlevelsup != 0 || ((Var *) node)->varno == *rti ||
			IS_SPECIAL_VARNO(((Var *) node)->varno);
	return expression_tree_walker(node, reads_row_walker, (void *) rti);
}

static bool
has_case_placeholder_walker(Node *node, void *unused)
{
	if (node == NULL)
		return false;
	if (IsA(node, CaseTestExpr))
		return true;
	return expression_tree_walker(node, has_case_placeholder_walker, unused);
}

static bool
runs_subquery_walker(Node *node, void *unused)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubPlan) || IsA(node, AlternativeSubPlan) || IsA(node, SubLink))
		return true;
	return expression_tree_walker(node, runs_subquery_walker, unused);
}

/*
 * May node be evaluated on this node on its own, its value travelling as a
 * parameter?  It must be a whole value (not a list, not a CASE arm) that
 * reads no row: neither the table at range-table index rti nor the row ON
 * CONFLICT proposes.  A CASE placeholder belongs to an enclosing CASE, so
 * what holds one stays with it.  once: the value is computed once for many
 * rows (a scan's parameter), so it must not be volatile nor run a subquery,
 * whose value may change from row to row.
 */
bool
shoal_evaluates_here(Node *node, Index rti, bool once)
{
	switch (nodeTag(node))
	{
		case T_Param:
			if (((Param *) node)->paramkind != PARAM_EXTERN && ((Param *) node)->paramkind != PARAM_EXEC)
				return false;	/* a subquery's output, or a multiple assignment's */
			break;
		case T_Var:
		case T_FuncExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_CaseExpr:
		case T_ArrayExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_SubscriptingRef:
		case T_SQLValueFunction:
		case T_NullTest:
		case T_BooleanTest:
		case T_CoerceToDomain:
			break;
		default:
			return false;
	}
	if (reads_row_walker(node, &rti))
		return false;
	if (!IsA(node, CaseExpr) && !IsA(node, ArrayCoerceExpr) && has_case_placeholder_walker(node, NULL))
		return false;
	return !once || (!contain_volatile_functions(node) && !runs_subquery_walker(node, NULL));
}

typedef struct ParamizeContext
{
	Index		relid;
	List	  **params;			/* expressions whose values are $1, $2, ... */
	bool		constants;		/* constants become parameters too */
	bool		conditional;	/* below a CASE, AND, OR or COALESCE: evaluated for some rows only */
} ParamizeContext;

static int
param_index(List **params, Node *expr)
{
	ListCell   *lc;
	int			i = 1;

	foreach(lc, *params)
	{
		if (equal(lfirst(lc), expr))
			return i;
		i++;
	}
	*params = lappend(*params, expr);
	return list_length(*params);
}

static Param *
make_scan_param(Node *expr, int index)
{
	Param	   *param = makeNode(Param);

	param->paramkind = PARAM_EXTERN;
	param->paramid = index;
	param->paramtype = exprType(expr);
	param->paramtypmod = exprTypmod(expr);
	param->paramcollid = exprCollation(expr);
	param->location = -1;
	return param;
}

static bool
evaluates_conditionally(Node *node)
{
	return IsA(node, CaseExpr) || IsA(node, CoalesceExpr) ||
		(IsA(node, BoolExpr) && ((BoolExpr *) node)->boolop != NOT_EXPR);
}

/*
 * The clause as deparse sees it: this table is range-table entry 1; what
 * reads none of its rows is $n.  Where PostgreSQL would evaluate a part for
 * some rows only (a CASE arm, the right of an AND), computing it here for
 * all could raise an error PostgreSQL would not: there, only parameters and
 * other relations' columns are taken as they are.
 */
static Node *
paramize_mutator(Node *node, ParamizeContext *ctx)
{
	Node	   *result;
	bool		conditional = ctx->conditional;

	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varno == ctx->relid && ((Var *) node)->varlevelsup == 0)
	{
		Var		   *var = (Var *) copyObject(node);

		var->varno = 1;
		var->varnosyn = 1;
		return (Node *) var;
	}
	if (IsA(node, Const))
		return ctx->constants ? (Node *) make_scan_param(node, param_index(ctx->params, node)) : node;
	if ((IsA(node, Var) || IsA(node, Param) || !ctx->conditional) &&
		shoal_evaluates_here(node, ctx->relid, true))
		return (Node *) make_scan_param(node, param_index(ctx->params, node));
	ctx->conditional |= evaluates_conditionally(node);
	result = expression_tree_mutator(node, paramize_mutator, (void *) ctx);
	ctx->conditional = conditional;
	return result;
}

/*
 * Deparse with the settings a remote node parses back unambiguously, the
 * same that postgres_fdw sends: everything qualified except pg_catalog, and
 * constants in portable styles (ISO dates...), which are the defaults, so
 * usually only search_path changes.
 */
char *
shoal_deparse_portable(Node *expr, List *dpcontext, bool prefix)
{
	int			nestlevel = NewGUCNestLevel();
	int			styles;
	char	   *sql;

	(void) set_config_option("search_path", "pg_catalog", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	styles = shoal_portable_output_begin();
	sql = deparse_expression(expr, dpcontext, prefix, false);
	shoal_portable_output_end(styles);
	AtEOXact_GUC(true, nestlevel);
	return sql;
}

/*
 * Whether expr, on the table at range-table index relid and (as INNER_VAR)
 * the row an ON CONFLICT proposes, can be evaluated by the node holding
 * the table: what shoal_remote_sql sends, values other than those rows'
 * columns excepted (the caller makes them parameters first).
 */
bool
shoal_expr_ships(Node *expr, Index relid)
{
	ShipContext ship = {relid, true};

	return !ships_walker(expr, &ship) && !contain_mutable_functions(expr);
}

static bool
is_this_column(Node *node, Index relid, AttrNumber *attnum)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	if (node && IsA(node, Var) && ((Var *) node)->varno == relid &&
		((Var *) node)->varlevelsup == 0 && ((Var *) node)->varattno > 0)
	{
		*attnum = ((Var *) node)->varattno;
		return true;
	}
	return false;
}

/* A value side: a Const stays itself; anything else is a parameter of the scan. */
static Node *
value_node(Node *node, List **params)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	if (IsA(node, Const))
		return node;
	return (Node *) makeInteger(param_index(params, node));
}

static bool
reads_this_rel(Node *node, Index relid)
{
	return bms_is_member(relid, pull_varnos(NULL, node));
}

/* Fill in the simple form of the qual, if the clause has one. */
static void
classify_simple(ShoalQual *qual, Expr *clause, Index relid, List **params)
{
	AttrNumber	attnum;

	qual->kind = SHOAL_QUAL_OTHER;
	if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
	{
		OpExpr	   *op = (OpExpr *) clause;
		Node	   *left = linitial(op->args);
		Node	   *right = lsecond(op->args);
		Oid			opno = op->opno;

		if (!is_this_column(left, relid, &attnum))
		{
			/* value op column: use the commutator, if there is one */
			if (!is_this_column(right, relid, &attnum) || !OidIsValid(opno = get_commutator(opno)))
				return;
			right = left;
		}
		if (reads_this_rel(right, relid))
			return;
		qual->kind = SHOAL_QUAL_OP;
		qual->attnum = attnum;
		qual->opname = get_opname(opno);
		qual->value = value_node(right, params);
	}
	else if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *op = (ScalarArrayOpExpr *) clause;
		Node	   *right = lsecond(op->args);

		if (!is_this_column(linitial(op->args), relid, &attnum) || reads_this_rel(right, relid))
			return;
		qual->kind = op->useOr ? SHOAL_QUAL_ANY : SHOAL_QUAL_ALL;
		qual->attnum = attnum;
		qual->opname = get_opname(op->opno);
		qual->value = value_node(right, params);
	}
	else if (IsA(clause, NullTest) && !((NullTest *) clause)->argisrow &&
			 is_this_column((Node *) ((NullTest *) clause)->arg, relid, &attnum))
	{
		qual->kind = ((NullTest *) clause)->nulltesttype == IS_NULL ? SHOAL_QUAL_ISNULL
			: SHOAL_QUAL_NOTNULL;
		qual->attnum = attnum;
	}
	else if (is_this_column((Node *) clause, relid, &attnum))
	{
		qual->kind = SHOAL_QUAL_BOOL;
		qual->attnum = attnum;
		qual->boolval = true;
	}
	else if (is_notclause(clause) &&
			 is_this_column((Node *) get_notclausearg(clause), relid, &attnum))
	{
		qual->kind = SHOAL_QUAL_BOOL;
		qual->attnum = attnum;
		qual->boolval = false;
	}
}

/*
 * The SQL of an expression on the table at range-table index relid, as the
 * node holding it evaluates it, or NULL if it must be evaluated here.
 * Values that are not constants are appended to *params (the scan's $n);
 * so are constants if constants_as_params, which makes the SQL the same
 * whatever the values: a remote plan cache keyed by the SQL then hits for
 * the custom plans PostgreSQL makes of statements on partitioned tables.
 */
char *
shoal_remote_sql(PlannerInfo *root, Index relid, Expr *expr, List **params,
				 bool constants_as_params)
{
	ShipContext ship = {1, false};
	ParamizeContext paramize = {relid, params, constants_as_params, false};
	RangeTblEntry *rte = planner_rt_fetch(relid, root);
	Node	   *remote;
	List	   *saved = list_copy(*params);
	char	   *sql = NULL;

	remote = paramize_mutator((Node *) expr, &paramize);
	if (ships_walker(remote, &ship) || contain_mutable_functions(remote))
	{
		*params = saved;
		return NULL;
	}
	PG_TRY();
	{
		sql = shoal_deparse_portable(remote, deparse_context_for(get_rel_name(rte->relid), rte->relid),
									 false);
	}
	PG_CATCH();
	{
		*params = saved;
		PG_RE_THROW();
	}
	PG_END_TRY();
	return sql;
}

/* The shipped form of a clause on baserel, or NULL if it must stay local. */
ShoalQual *
shoal_classify_clause(PlannerInfo *root, RelOptInfo *baserel, Expr *clause, List **params,
					  bool constants_as_params)
{
	ShoalQual  *qual;
	List	   *saved = list_copy(*params);
	char	   *sql;

	qual = palloc0(sizeof(ShoalQual));
	classify_simple(qual, clause, baserel->relid, params);
	sql = shoal_remote_sql(root, baserel->relid, clause, params, constants_as_params);
	if (sql == NULL)
	{
		*params = saved;		/* classify_simple may have added the value */
		pfree(qual);
		return NULL;
	}
	qual->sql = sql;
	return qual;
}

/* ShoalQuals to and from a copyObject-able list, for a plan's fdw_private. */
List *
shoal_quals_to_private(List *quals)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, quals)
	{
		ShoalQual  *q = lfirst(lc);

		result = lappend(result,
						 list_make5(makeInteger(q->kind),
									makeInteger(q->attnum),
									makeString(q->opname ? q->opname : pstrdup("")),
									q->value ? q->value : (Node *) makeInteger(0),
									list_make2(makeBoolean(q->boolval), makeString(q->sql))));
	}
	return result;
}

List *
shoal_quals_from_private(List *private)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, private)
	{
		List	   *item = lfirst(lc);
		ShoalQual  *q = palloc0(sizeof(ShoalQual));
		List	   *extra = list_nth(item, 4);
		Node	   *value = list_nth(item, 3);

		q->kind = intVal(linitial(item));
		q->attnum = intVal(lsecond(item));
		q->opname = strVal(lthird(item));
		q->value = (IsA(value, Integer) && intVal(value) == 0) ? NULL : value;
		q->boolval = boolVal(linitial(extra));
		q->sql = strVal(lsecond(extra));
		result = lappend(result, q);
	}
	return result;
}

static PyObject *
qual_value(ShoalQual *q, Datum *paramvals, bool *paramnulls, Oid *paramtypes, int nparams,
		   bool *known)
{
	*known = true;
	if (q->value == NULL)
		Py_RETURN_NONE;
	if (IsA(q->value, Const))
	{
		Const	   *c = (Const *) q->value;

		return shoal_datum_to_py(c->constvalue, c->constisnull, c->consttype);
	}
	else
	{
		int			index = intVal(q->value);

		if (paramvals == NULL || index < 1 || index > nparams)
		{
			/* planning or EXPLAIN: the value is known only when the scan runs */
			return PyObject_CallFunction(shoal_host_attr("ParamValue"), "i", index);
		}
		return shoal_datum_to_py(paramvals[index - 1], paramnulls[index - 1], paramtypes[index - 1]);
	}
}

/*
 * The Python Quals for a scan.  Without parameter values (at planning and
 * in EXPLAIN), a value known only at run time is a ParamValue.  Quals that
 * only have SQL are included when with_sql_only.
 */
PyObject *
shoal_quals_to_py(List *quals, Relation rel, Datum *paramvals, bool *paramnulls,
				  Oid *paramtypes, int nparams, bool with_sql_only, bool text_params)
{
	PyObject   *qual_class = shoal_host_attr("Qual");
	PyObject   *list = PyList_New(0);
	PyObject   *params = PyList_New(0);
	PyObject   *types = PyList_New(0);
	PyObject   *result;
	TupleDesc	desc = RelationGetDescr(rel);
	ListCell   *lc;
	int			nestlevel;

	if (list == NULL || params == NULL || types == NULL)
		shoal_python_raise("building quals");

	foreach(lc, quals)
	{
		ShoalQual  *q = lfirst(lc);
		PyObject   *field = Py_None;
		PyObject   *op = Py_None;
		PyObject   *value = NULL;
		PyObject   *item;
		bool		known = true;

		if (q->kind == SHOAL_QUAL_OTHER && !with_sql_only)
			continue;
		Py_INCREF(field);
		Py_INCREF(op);
		if (q->kind != SHOAL_QUAL_OTHER)
		{
			Py_DECREF(field);
			field = shoal_cstring_to_py(NameStr(TupleDescAttr(desc, q->attnum - 1)->attname));
		}
		switch (q->kind)
		{
			case SHOAL_QUAL_OP:
				Py_DECREF(op);
				op = PyUnicode_FromString(q->opname);
				value = qual_value(q, paramvals, paramnulls, paramtypes, nparams, &known);
				break;
			case SHOAL_QUAL_ANY:
			case SHOAL_QUAL_ALL:
				Py_DECREF(op);
				op = Py_BuildValue("(sO)", q->opname, q->kind == SHOAL_QUAL_ANY ? Py_True : Py_False);
				value = qual_value(q, paramvals, paramnulls, paramtypes, nparams, &known);
				break;
			case SHOAL_QUAL_ISNULL:
			case SHOAL_QUAL_NOTNULL:
				Py_DECREF(op);
				op = PyUnicode_FromString(q->kind == SHOAL_QUAL_ISNULL ? "=" : "<>");
				value = Py_NewRef(Py_None);
				break;
			case SHOAL_QUAL_BOOL:
				Py_DECREF(op);
				op = PyUnicode_FromString("=");
				value = PyBool_FromLong(q->boolval);
				break;
			case SHOAL_QUAL_OTHER:
				value = Py_NewRef(Py_None);
				break;
		}
		if (!known)
		{
			Py_XDECREF(value);
			Py_XDECREF(field);
			Py_XDECREF(op);
			continue;
		}
		item = (field && op && value) ?
			PyObject_CallFunction(qual_class, "OOON", field, op, value, shoal_cstring_to_py(q->sql)) : NULL;
		Py_XDECREF(field);
		Py_XDECREF(op);
		Py_XDECREF(value);
		if (item == NULL || PyList_Append(list, item) < 0)
		{
			Py_XDECREF(item);
			Py_DECREF(list);
			Py_DECREF(params);
			Py_DECREF(types);
			shoal_python_raise("building quals");
		}
		Py_DECREF(item);
	}

	nestlevel = text_params && paramvals != NULL ? shoal_portable_output_begin() : -1;
	for (int i = 0; paramvals != NULL && i < nparams; i++)
	{
		PyObject   *value = text_params ? shoal_datum_to_text_py(paramvals[i], paramnulls[i], paramtypes[i])
			: shoal_datum_to_py(paramvals[i], paramnulls[i], paramtypes[i]);
		PyObject   *type = PyLong_FromUnsignedLong(paramtypes[i]);

		if (value == NULL || type == NULL || PyList_Append(params, value) < 0 ||
			PyList_Append(types, type) < 0)
		{
			Py_XDECREF(value);
			Py_XDECREF(type);
			Py_DECREF(list);
			Py_DECREF(params);
			Py_DECREF(types);
			shoal_python_raise("building query parameters");
		}
		Py_DECREF(value);
		Py_DECREF(type);
	}
	shoal_portable_output_end(nestlevel);

	result = PyObject_CallFunction(shoal_host_attr("Quals"), "NNN", list, params, types);
	if (result == NULL)
		shoal_python_raise("building quals");
	return result;
}
