/*-------------------------------------------------------------------------
 * sqlfunc.c
 *		SQL functions implemented in Python, and DDL handed to Python.
 *
 * shoal_sql_call is the C symbol behind every SQL function of the
 * extension that is written in Python: it calls the function of the same
 * name in shoal.sharding.api with the arguments as Python values.  Only
 * functions the extension's script declares with this symbol can be
 * reached (creating a C function needs superuser), so the SQL privileges of
 * those declarations are the access control.
 *
 * shoal_utility_before/after let shoal.sharding.ddl see DDL statements
 * that may concern distributed or global tables, before and after
 * PostgreSQL runs them, so that it can rewrite or propagate them.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(shoal_sql_call);

static PyObject *
argument_to_py(FunctionCallInfo fcinfo, int i)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, i);
	PyObject   *value;

	if (PG_ARGISNULL(i))
		Py_RETURN_NONE;
	/* relations, types and functions travel as their OIDs */
	if (type == REGCLASSOID || type == REGTYPEOID || type == REGPROCEDUREOID || type == OIDOID)
		return PyLong_FromUnsignedLong(DatumGetObjectId(PG_GETARG_DATUM(i)));
	if (type == JSONBOID || type == JSONOID)
	{
		/* as JSON text: shoal.sharding.api loads it */
		char	   *json = type == JSONBOID
			? DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(i)))
			: TextDatumGetCString(PG_GETARG_DATUM(i));

		return shoal_cstring_to_py(json);
	}
	value = shoal_datum_to_py(PG_GETARG_DATUM(i), false, type);
	if (value == NULL)
		shoal_python_raise("converting an argument");
	return value;
}

Datum
shoal_sql_call(PG_FUNCTION_ARGS)
{
	char	   *name = get_func_name(fcinfo->flinfo->fn_oid);
	Oid			rettype = get_func_rettype(fcinfo->flinfo->fn_oid);
	PyObject   *api;
	PyObject   *args;
	PyObject   *result;
	Datum		datum;
	bool		isnull;

	if (CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("shoal's Python functions are not trigger functions")));
	api = shoal_import_attr("shoal.sharding.api", name);
	args = PyTuple_New(PG_NARGS());
	if (args == NULL)
	{
		Py_DECREF(api);
		shoal_python_raise(name);
	}
	PG_TRY();
	{
		for (int i = 0; i < PG_NARGS(); i++)
			PyTuple_SET_ITEM(args, i, argument_to_py(fcinfo, i));
	}
	PG_CATCH();
	{
		Py_DECREF(args);
		Py_DECREF(api);
		PG_RE_THROW();
	}
	PG_END_TRY();
	result = shoal_call_method(api, "__call__", args);
	Py_DECREF(api);

	if (rettype == VOIDOID)
	{
		Py_DECREF(result);
		PG_RETURN_VOID();
	}
	PG_TRY();
	{
		ShoalTypeIO io;

		if (rettype == JSONBOID && result != Py_None)
		{
			/* Python returns the JSON text */
			const char *json = PyUnicode_Check(result) ? PyUnicode_AsUTF8(result) : NULL;

			if (json == NULL)
				shoal_python_raise(name);
			datum = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(json)));
			isnull = false;
		}
		else
		{
			shoal_typeio_init(&io, rettype, -1);
			datum = shoal_py_to_datum(result, &io, &isnull);
		}
	}
	PG_FINALLY();
	{
		Py_DECREF(result);
	}
	PG_END_TRY();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(datum);
}

static bool
is_shoal_option(DefElem *def)
{
	return def->defnamespace == NULL &&
		(strcmp(def->defname, "distributed_by") == 0 ||
		 strcmp(def->defname, "num_parts") == 0 ||
		 strcmp(def->defname, "colocate_with") == 0 ||
		 strcmp(def->defname, "global") == 0);
}

static void
dict_set(PyObject *dict, const char *key, PyObject *value)
{
	if (value == NULL || PyDict_SetItemString(dict, key, value) < 0)
	{
		Py_XDECREF(value);
		Py_DECREF(dict);
		shoal_python_raise("describing a statement");
	}
	Py_DECREF(value);
}

static PyObject *
py_str(const char *s)
{
	if (s == NULL)
		Py_RETURN_NONE;
	return shoal_cstring_to_py(s);
}

static PyObject *
new_list(void)
{
	PyObject   *list = PyList_New(0);

	if (list == NULL)
		shoal_python_raise("describing a statement");
	return list;
}

/* Append a new reference to list, which takes it (an ERROR if it cannot). */
static void
append_new(PyObject *list, PyObject *item)
{
	if (item == NULL || PyList_Append(list, item) < 0)
	{
		Py_XDECREF(item);
		shoal_python_raise("describing a statement");
	}
	Py_DECREF(item);
}

/* OIDs of the relations named, skipping those that do not exist (PostgreSQL reports them). */
static PyObject *
relation_oids(List *rangevars)
{
	PyObject   *list = new_list();
	ListCell   *lc;

	foreach(lc, rangevars)
	{
		Oid			relid = RangeVarGetRelid(lfirst_node(RangeVar, lc), NoLock, true);

		if (OidIsValid(relid))
			append_new(list, PyLong_FromUnsignedLong(relid));
	}
	return list;
}

/* Does an ALTER TABLE add a constraint of this kind (directly, or on a new column)? */
static bool
alter_adds(AlterTableStmt *stmt, ConstrType kind1, ConstrType kind2, ConstrType kind3)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		List	   *constraints = NIL;
		ListCell   *c;

		if (cmd->def && IsA(cmd->def, Constraint))
			constraints = list_make1(cmd->def);
		else if (cmd->def && IsA(cmd->def, ColumnDef))
			constraints = ((ColumnDef *) cmd->def)->constraints;
		foreach(c, constraints)
		{
			ConstrType	t = lfirst_node(Constraint, c)->contype;

			if (t == kind1 || t == kind2 || t == kind3)
				return true;
		}
	}
	return false;
}

static PyObject *
py_names(List *strings)
{
	PyObject   *list = new_list();
	ListCell   *lc;

	foreach(lc, strings)
		append_new(list, py_str(strVal(lfirst(lc))));
	return list;
}

static PyObject *
py_char(char c)
{
	char		text[2] = {c, '\0'};

	return py_str(text);
}

/*
 * A FOREIGN KEY clause as a dict of its parts, appended to list; column: the
 * column a column constraint is declared with (it names no columns itself).
 */
static void
append_foreign_key(PyObject *list, Constraint *con, const char *column)
{
	PyObject   *item = PyDict_New();

	if (item == NULL)
		shoal_python_raise("describing a statement");
	dict_set(item, "name", py_str(con->conname));
	dict_set(item, "columns", column ? Py_BuildValue("[s]", column) : py_names(con->fk_attrs));
	dict_set(item, "ref_schema", py_str(con->pktable->schemaname));
	dict_set(item, "ref_name", py_str(con->pktable->relname));
	dict_set(item, "ref_columns", py_names(con->pk_attrs));
	dict_set(item, "match", py_char(con->fk_matchtype));
	dict_set(item, "on_update", py_char(con->fk_upd_action));
	dict_set(item, "on_delete", py_char(con->fk_del_action));
	dict_set(item, "on_delete_columns", py_names(con->fk_del_set_cols));
	dict_set(item, "deferrable", PyBool_FromLong(con->deferrable));
	dict_set(item, "initially_deferred", PyBool_FromLong(con->initdeferred));
	dict_set(item, "not_valid", PyBool_FromLong(con->skip_validation));
	append_new(list, item);
}

/* The foreign keys of a CREATE TABLE, table and column constraints alike. */
static PyObject *
create_foreign_keys(CreateStmt *stmt)
{
	PyObject   *keys = new_list();
	ListCell   *lc;
	ListCell   *c;

	foreach(lc, stmt->tableElts)
	{
		Node	   *element = lfirst(lc);

		if (IsA(element, Constraint) && ((Constraint *) element)->contype == CONSTR_FOREIGN)
			append_foreign_key(keys, (Constraint *) element, NULL);
		else if (IsA(element, ColumnDef))
		{
			foreach(c, ((ColumnDef *) element)->constraints)
			{
				Constraint *con = lfirst_node(Constraint, c);

				if (con->contype == CONSTR_FOREIGN)
					append_foreign_key(keys, con, ((ColumnDef *) element)->colname);
			}
		}
	}
	return keys;
}

/* A copy of a CREATE TABLE's columns and constraints without its foreign keys. */
static List *
without_foreign_keys(List *elements)
{
	List	   *kept = NIL;
	ListCell   *lc;
	ListCell   *c;

	foreach(lc, elements)
	{
		Node	   *element = lfirst(lc);

		if (IsA(element, Constraint) && ((Constraint *) element)->contype == CONSTR_FOREIGN)
			continue;
		if (IsA(element, ColumnDef))
		{
			ColumnDef  *column = (ColumnDef *) element;
			List	   *constraints = NIL;

			foreach(c, column->constraints)
			{
				if (lfirst_node(Constraint, c)->contype != CONSTR_FOREIGN)
					constraints = lappend(constraints, lfirst(c));
			}
			column->constraints = constraints;
		}
		kept = lappend(kept, element);
	}
	return kept;
}

/*
 * The foreign keys an ALTER TABLE adds with ADD CONSTRAINT, as dicts of the
 * clause's parts (shoal.sharding.foreign_keys builds each partition's own),
 * and the names of the constraints it drops, with their IF EXISTS.  Foreign
 * keys declared with a new column are not listed: "only_foreign_keys" says
 * whether ADD CONSTRAINT ... FOREIGN KEY is all the statement does, and
 * "only_dropped_constraints" whether DROP CONSTRAINT is.
 */
static void
describe_constraint_changes(AlterTableStmt *stmt, PyObject *info)
{
	PyObject   *keys = new_list();
	PyObject   *drops = new_list();
	bool		only_keys = stmt->cmds != NIL;
	bool		only_drops = stmt->cmds != NIL;
	ListCell   *lc;

	/* info owns both lists from here on: an error below leaves nothing behind */
	dict_set(info, "foreign_keys", keys);
	dict_set(info, "dropped_constraints", drops);
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		Constraint *con = (cmd->def && IsA(cmd->def, Constraint)) ? (Constraint *) cmd->def : NULL;

		if (cmd->subtype == AT_AddConstraint && con != NULL && con->contype == CONSTR_FOREIGN)
		{
			append_foreign_key(keys, con, NULL);
			only_drops = false;
			continue;
		}
		only_keys = false;
		if (cmd->subtype != AT_DropConstraint)
		{
			only_drops = false;
			continue;
		}
		append_new(drops, Py_BuildValue("(sO)", cmd->name, cmd->missing_ok ? Py_True : Py_False));
	}
	dict_set(info, "only_foreign_keys", PyBool_FromLong(only_keys));
	dict_set(info, "only_dropped_constraints", PyBool_FromLong(only_drops));
}

static bool
alter_has(AlterTableStmt *stmt, AlterTableType t1, AlterTableType t2)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableType t = lfirst_node(AlterTableCmd, lc)->subtype;

		if (t == t1 || t == t2)
			return true;
	}
	return false;
}

/*
 * What Python needs to know of a statement that may concern a distributed
 * or global table, or the roles every node must share: its kind, the
 * relations it names (OIDs), a few flags.
 * NULL for statements that cannot concern one.  PostgreSQL has parsed the
 * statement already; Python does not parse SQL in a backend.
 */
static PyObject *
describe_statement(Node *parsetree)
{
	PyObject   *info = PyDict_New();
	const char *kind = NULL;
	List	   *rangevars = NIL;

	if (info == NULL)
		shoal_python_raise("describing a statement");
	switch (nodeTag(parsetree))
	{
		case T_CreateStmt:
			{
				CreateStmt *stmt = (CreateStmt *) parsetree;
				PyObject   *options = PyDict_New();
				ListCell   *lc;

				dict_set(info, "options", options);
				foreach(lc, stmt->options)
				{
					DefElem    *def = lfirst_node(DefElem, lc);

					if (is_shoal_option(def))
						dict_set(options, def->defname, py_str(def->arg ? defGetString(def) : "true"));
				}
				if (PyDict_GET_SIZE(options) > 0)
				{
					kind = "create";
					dict_set(info, "schema", py_str(stmt->relation->schemaname));
					dict_set(info, "name", py_str(stmt->relation->relname));
					dict_set(info, "partitioned", PyBool_FromLong(stmt->partspec != NULL ||
																  stmt->partbound != NULL ||
																  stmt->inhRelations != NIL));
					dict_set(info, "persistent",
							 PyBool_FromLong(stmt->relation->relpersistence == RELPERSISTENCE_PERMANENT));
					dict_set(info, "if_not_exists", PyBool_FromLong(stmt->if_not_exists));
					dict_set(info, "foreign_keys", create_foreign_keys(stmt));
				}
				else if (stmt->partbound != NULL)
				{
					kind = "create_partition";
					rangevars = stmt->inhRelations;
				}
				break;
			}
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;

				if (stmt->objtype != OBJECT_TABLE && stmt->objtype != OBJECT_INDEX)
					break;
				kind = stmt->objtype == OBJECT_TABLE ? "alter" : "alter_index";
				rangevars = list_make1(stmt->relation);
				dict_set(info, "adds_unique",
						 PyBool_FromLong(alter_adds(stmt, CONSTR_PRIMARY, CONSTR_UNIQUE, CONSTR_EXCLUSION)));
				dict_set(info, "adds_foreign_key",
						 PyBool_FromLong(alter_adds(stmt, CONSTR_FOREIGN, CONSTR_FOREIGN, CONSTR_FOREIGN)));
				dict_set(info, "partitions",
						 PyBool_FromLong(alter_has(stmt, AT_AttachPartition, AT_DetachPartition)));
				describe_constraint_changes(stmt, info);
				break;
			}
		case T_IndexStmt:
			{
				IndexStmt  *stmt = (IndexStmt *) parsetree;

				kind = "index";
				rangevars = list_make1(stmt->relation);
				dict_set(info, "unique", PyBool_FromLong(stmt->unique || stmt->primary));
				dict_set(info, "concurrent", PyBool_FromLong(stmt->concurrent));
				break;
			}
		case T_CreateRoleStmt:
		case T_AlterRoleStmt:
		case T_AlterRoleSetStmt:
		case T_DropRoleStmt:
		case T_GrantRoleStmt:
			kind = "role";
			break;
		case T_RenameStmt:
			{
				RenameStmt *stmt = (RenameStmt *) parsetree;

				if (stmt->renameType == OBJECT_ROLE)
				{
					kind = "role";
					break;
				}
				if (stmt->relation == NULL)
					break;
				kind = stmt->renameType == OBJECT_INDEX ? "rename_index" : "rename";
				rangevars = list_make1(stmt->relation);
				break;
			}
		case T_GrantStmt:
			{
				GrantStmt  *stmt = (GrantStmt *) parsetree;

				if (stmt->objtype != OBJECT_TABLE || stmt->targtype != ACL_TARGET_OBJECT)
					break;
				kind = "grant";
				rangevars = stmt->objects;
				break;
			}
		case T_DropStmt:
			{
				DropStmt   *stmt = (DropStmt *) parsetree;
				ListCell   *lc;

				if (stmt->removeType != OBJECT_TABLE && stmt->removeType != OBJECT_FOREIGN_TABLE &&
					stmt->removeType != OBJECT_INDEX)
					break;
				kind = stmt->removeType == OBJECT_INDEX ? "drop_index" : "drop";
				foreach(lc, stmt->objects)
					rangevars = lappend(rangevars, makeRangeVarFromNameList(lfirst(lc)));
				dict_set(info, "concurrent", PyBool_FromLong(stmt->concurrent));
				dict_set(info, "count", PyLong_FromLong(list_length(stmt->objects)));
				break;
			}
		case T_TruncateStmt:
			{
				TruncateStmt *stmt = (TruncateStmt *) parsetree;

				kind = "truncate";
				rangevars = stmt->relations;
				dict_set(info, "restart_seqs", PyBool_FromLong(stmt->restart_seqs));
				dict_set(info, "cascade", PyBool_FromLong(stmt->behavior == DROP_CASCADE));
				dict_set(info, "count", PyLong_FromLong(list_length(stmt->relations)));
				break;
			}
		default:
			break;
	}
	if (kind == NULL)
	{
		Py_DECREF(info);
		return NULL;
	}
	dict_set(info, "kind", py_str(kind));
	dict_set(info, "relations", relation_oids(rangevars));
	return info;
}

/*
 * Ask shoal.sharding.ddl about a statement before it runs.  Python answers
 * False (not shoal's business: this returns NULL) or a callable, to call
 * once PostgreSQL has run the statement (a new reference).  Python may
 * raise instead, to refuse the statement.  shoal's options of CREATE TABLE
 * are taken out of the statement (*pstmt becomes a copy) before
 * PostgreSQL sees them.
 */
PyObject *
shoal_utility_before(PlannedStmt **pstmt, const char *queryString)
{
	Node	   *parsetree = (*pstmt)->utilityStmt;
	PyObject   *info;
	PyObject   *before;
	PyObject   *result;
	char	   *sql;

	switch (nodeTag(parsetree))
	{
		case T_CreateStmt:
		case T_AlterTableStmt:
		case T_IndexStmt:
		case T_RenameStmt:
		case T_GrantStmt:
		case T_DropStmt:
		case T_TruncateStmt:
		case T_CreateRoleStmt:
		case T_AlterRoleStmt:
		case T_AlterRoleSetStmt:
		case T_DropRoleStmt:
		case T_GrantRoleStmt:
			break;
		default:
			return NULL;
	}
	if (shoal_in_bgworker || creating_extension || !IsTransactionState() ||
		!OidIsValid(get_extension_oid("shoal", true)))
		return NULL;
	shoal_python_ensure();
	info = describe_statement(parsetree);
	if (info == NULL)
		return NULL;
	if ((*pstmt)->stmt_location >= 0 && (*pstmt)->stmt_len > 0)
		sql = pnstrdup(queryString + (*pstmt)->stmt_location, (*pstmt)->stmt_len);
	else if ((*pstmt)->stmt_location > 0)
		sql = pstrdup(queryString + (*pstmt)->stmt_location);
	else
		sql = pstrdup(queryString);
	shoal_describe_password(parsetree, sql, (*pstmt)->stmt_location, info);

	before = shoal_import_attr("shoal.sharding.ddl", "before");
	result = shoal_call_method(before, "__call__", Py_BuildValue("(sN)", sql, info));
	Py_DECREF(before);
	if (result == Py_False)
	{
		Py_DECREF(result);
		return NULL;
	}
	if (IsA(parsetree, CreateStmt))
	{
		CreateStmt *stmt;
		List	   *kept = NIL;
		ListCell   *lc;

		*pstmt = copyObject(*pstmt);
		stmt = (CreateStmt *) (*pstmt)->utilityStmt;
		foreach(lc, stmt->options)
			if (!is_shoal_option(lfirst_node(DefElem, lc)))
				kept = lappend(kept, lfirst(lc));
		stmt->options = kept;
		/* the table's foreign keys go on its partitions or copies, once it has them (Python) */
		stmt->tableElts = without_foreign_keys(stmt->tableElts);
	}
	return result;
}

/* Run what shoal_utility_before asked to run afterwards; steals the reference. */
void
shoal_utility_after(PyObject *after)
{
	PyObject   *result;

	PG_TRY();
	{
		result = shoal_call_method(after, "__call__", NULL);
		Py_DECREF(result);
	}
	PG_FINALLY();
	{
		Py_DECREF(after);
	}
	PG_END_TRY();
}
