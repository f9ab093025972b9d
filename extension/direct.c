/*-------------------------------------------------------------------------
 * direct.c
 *		UPDATE and DELETE that the handler runs whole, as one statement.
 *
 * The row-by-row path reads each row's identity with the scan (FOR UPDATE)
 * and then sends an UPDATE or DELETE per row: two round trips for the
 * single-row UPDATE of a pgbench transaction.  When the statement's scan
 * of the table is all the handler's (every qual shipped, no join) and each
 * new value is an expression the other node can compute, the ForeignScan
 * becomes the modification: the handler's modify_directly() gets the quals
 * and the SET expressions deparsed by ruleutils, with $n for the values
 * known at run time, and returns the row count, or the rows for RETURNING.
 *
 * PostgreSQL asks only when nothing must run here per row (row triggers,
 * stored generated columns, WITH CHECK OPTION); we also decline when the
 * UPDATE sets a partition key column, through the parent or not: the row
 * path moves such rows to their new partition.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/table.h"
#include "catalog/partition.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "optimizer/appendinfo.h"
#include "optimizer/pathnode.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/rel.h"

/* SHOAL_PRIVATE_DIRECT, by position */
enum ShoalDirectPrivate
{
	SHOAL_DIRECT_OPERATION,		/* Integer: CmdType */
	SHOAL_DIRECT_TARGETS,		/* Integer list: the attnums UPDATE sets */
	SHOAL_DIRECT_EXPRS,			/* String list: their new values' SQL */
	SHOAL_DIRECT_RETURNING,		/* Boolean: rows come back for RETURNING */
	SHOAL_DIRECT_SET_PROCESSED	/* Boolean: the statement's row count is ours */
};

/* The ForeignScan of the result relation under the ModifyTable, if that is what it reads. */
static ForeignScan *
result_scan(ModifyTable *plan, Index resultRelation, int subplan_index)
{
	Plan	   *subplan = outerPlan(plan);

	/* an UPDATE of several partitions has an Append, possibly under a Result */
	if (subplan != NULL && IsA(subplan, Result) && outerPlan(subplan) != NULL &&
		IsA(outerPlan(subplan), Append))
		subplan = outerPlan(subplan);
	if (subplan != NULL && IsA(subplan, Append))
	{
		Append	   *append = (Append *) subplan;

		if (subplan_index >= list_length(append->appendplans))
			return NULL;
		subplan = list_nth(append->appendplans, subplan_index);
	}
	if (subplan == NULL || !IsA(subplan, ForeignScan) ||
		((ForeignScan *) subplan)->scan.scanrelid != resultRelation)
		return NULL;
	return (ForeignScan *) subplan;
}

/*
 * Whether an UPDATE setting these columns of relid may change the partition
 * key of a partitioned table above it, also when it targets the partition
 * itself (partColsUpdated covers an UPDATE of the parent only).
 */
static bool
sets_partition_key(Oid relid, List *targets)
{
	List	   *ancestors = get_partition_ancestors(relid);
	ListCell   *lc;

	foreach(lc, ancestors)
	{
		Relation	parent = table_open(lfirst_oid(lc), NoLock);
		PartitionKey key = RelationGetPartitionKey(parent);
		bool		found = false;

		for (int i = 0; i < key->partnatts && !found; i++)
		{
			AttrNumber	attnum;

			if (key->partattrs[i] == 0)
				found = true;	/* an expression: it may read any column */
			else
			{
				attnum = get_attnum(relid, get_attname(RelationGetRelid(parent), key->partattrs[i], false));
				found = list_member_int(targets, attnum);
			}
		}
		table_close(parent, NoLock);
		if (found)
			return true;
	}
	return false;
}

static bool
shoalPlanDirectModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation, int subplan_index)
{
	RangeTblEntry *rte = planner_rt_fetch(resultRelation, root);
	ForeignScan *scan;
	PyObject   *handler;
	List	   *params;
	List	   *targets = NIL;
	List	   *exprs = NIL;
	List	   *columns = NIL;
	List	   *private;
	bool		returning = plan->returningLists != NIL;

	if (plan->operation != CMD_UPDATE && plan->operation != CMD_DELETE)
		return false;
	/* a partition key may change: the row path moves such rows */
	if (plan->partColsUpdated)
		return false;
	scan = result_scan(plan, resultRelation, subplan_index);
	if (scan == NULL || scan->scan.plan.qual != NIL || scan->fdw_private == NIL)
		return false;
	private = scan->fdw_private;
	if (!intVal(list_nth(private, SHOAL_PRIVATE_EXACT)) ||
		intVal(list_nth(private, SHOAL_PRIVATE_LIMIT)) >= 0)
		return false;
	handler = shoal_handler_for(rte->relid);
	if (!shoal_handler_flag(handler, "direct_modify"))
		return false;

	params = list_copy(scan->fdw_exprs);
	if (plan->operation == CMD_UPDATE)
	{
		List	   *tlist;
		List	   *attnums;
		ListCell   *lc;
		ListCell   *la;
		bool		constants_as_params = shoal_handler_flag(handler, "constants_as_params");

		get_translated_update_targetlist(root, resultRelation, &tlist, &attnums);
		forboth(lc, tlist, la, attnums)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);
			char	   *sql;

			if (lfirst_int(la) <= InvalidAttrNumber)
				return false;
			sql = shoal_remote_sql(root, resultRelation, tle->expr, &params, constants_as_params);
			if (sql == NULL)
				return false;
			targets = lappend_int(targets, lfirst_int(la));
			exprs = lappend(exprs, makeString(sql));
		}
	}
	if (targets != NIL && get_rel_relispartition(rte->relid) && sets_partition_key(rte->relid, targets))
		return false;
	if (returning)
	{
		Relation	rel = table_open(rte->relid, NoLock);

		columns = shoal_live_attrs(rel);
		table_close(rel, NoLock);
	}

	scan->operation = plan->operation;
	scan->resultRelation = resultRelation;
	scan->fdw_exprs = params;
	scan->fdw_private = list_make5(columns,
								   list_nth(private, SHOAL_PRIVATE_QUALS),
								   NIL,
								   makeInteger(-1),
								   list_nth(private, SHOAL_PRIVATE_EXACT));
	scan->fdw_private = lappend(scan->fdw_private,
								list_make5(makeInteger(plan->operation), targets, exprs,
										   makeBoolean(returning), makeBoolean(plan->canSetTag)));
	return true;
}

static List *
direct_private(ForeignScanState *node)
{
	return list_nth(((ForeignScan *) node->ss.ps.plan)->fdw_private, SHOAL_PRIVATE_DIRECT);
}

/* The handler's arguments: operation, quals, assignments, returning columns or None. */
static PyObject *
direct_args(ForeignScanState *node, PyObject *quals)
{
	List	   *private = direct_private(node);
	Relation	rel = node->ss.ss_currentRelation;
	PyObject   *assignments = PyDict_New();
	PyObject   *names;
	List	   *exprs = list_nth(private, SHOAL_DIRECT_EXPRS);
	PyObject   *returning;

	if (assignments == NULL)
		shoal_python_raise("building assignments");
	names = shoal_column_names(rel, list_nth(private, SHOAL_DIRECT_TARGETS));
	for (int i = 0; i < list_length(exprs); i++)
	{
		PyObject   *sql = shoal_cstring_to_py(strVal(list_nth(exprs, i)));
		int			failed = PyDict_SetItem(assignments, PyList_GET_ITEM(names, i), sql);

		Py_DECREF(sql);
		if (failed < 0)
		{
			Py_DECREF(names);
			Py_DECREF(assignments);
			shoal_python_raise("building assignments");
		}
	}
	Py_DECREF(names);
	if (boolVal(list_nth(private, SHOAL_DIRECT_RETURNING)))
		returning = shoal_column_names(rel, list_nth(((ForeignScan *) node->ss.ps.plan)->fdw_private,
												  SHOAL_PRIVATE_COLUMNS));
	else
		returning = Py_NewRef(Py_None);
	return Py_BuildValue("(sNNN)",
						 intVal(list_nth(private, SHOAL_DIRECT_OPERATION)) == CMD_UPDATE ? "UPDATE" : "DELETE",
						 quals, assignments, returning);
}

static void
shoalBeginDirectModify(ForeignScanState *node, int eflags)
{
	/* the statement runs when the executor first asks for its result, as a scan's would */
	shoal_scan_begin(node, eflags, false);
}

static TupleTableSlot *
shoalIterateDirectModify(ForeignScanState *node)
{
	List	   *private = direct_private(node);
	bool		returning = boolVal(list_nth(private, SHOAL_DIRECT_RETURNING));
	bool		set_processed = boolVal(list_nth(private, SHOAL_DIRECT_SET_PROCESSED));
	EState	   *estate = node->ss.ps.state;
	TupleTableSlot *slot;

	if (!shoal_scan_started(node))
	{
		PyObject   *handler = shoal_scan_handler(node);
		PyObject   *result = shoal_call_method(handler, "modify_directly",
											   direct_args(node, shoal_scan_quals(node)));

		if (!returning)
		{
			long long	rows = PyLong_AsLongLong(result);
			PyObject   *nothing;

			Py_DECREF(result);
			if (rows < 0)
			{
				if (!PyErr_Occurred())
					PyErr_Format(PyExc_ValueError, "%lld rows", rows);
				shoal_python_raise("modify_directly must return the number of rows");
			}
			if (set_processed)
				estate->es_processed += rows;
			/* no rows to return: the scan has started and is at its end */
			if ((nothing = PyTuple_New(0)) == NULL)
				shoal_python_raise("modify_directly");
			shoal_scan_set_result(node, nothing);
		}
		else
			shoal_scan_set_result(node, result);
	}
	slot = shoal_scan_next(node);
	if (!returning || TupIsNull(slot))
		return ExecClearTuple(node->ss.ss_ScanTupleSlot);
	/* RETURNING computes from the row as the other node stored it (or deleted it) */
	slot->tts_tableOid = RelationGetRelid(node->ss.ss_currentRelation);
	node->resultRelInfo->ri_projectReturning->pi_exprContext->ecxt_scantuple = slot;
	if (set_processed)
		estate->es_processed++;
	return slot;
}

static void
shoalEndDirectModify(ForeignScanState *node)
{
	shoal_scan_end(node);
}

static void
shoalExplainDirectModify(ForeignScanState *node, ExplainState *es)
{
	List	   *private = direct_private(node);
	PyObject   *quals = shoal_scan_explain_quals(node, es);
	PyObject   *args = direct_args(node, quals);
	PyObject   *kwargs = Py_BuildValue("{sO}", "verbose", es->verbose ? Py_True : Py_False);
	List	   *targets = list_nth(private, SHOAL_DIRECT_TARGETS);
	List	   *exprs = list_nth(private, SHOAL_DIRECT_EXPRS);
	TupleDesc	desc = RelationGetDescr(node->ss.ss_currentRelation);
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < list_length(targets); i++)
		appendStringInfo(&buf, "%s%s = %s", i > 0 ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(desc, list_nth_int(targets, i) - 1)->attname)),
						 strVal(list_nth(exprs, i)));
	if (buf.len > 0)
		ExplainPropertyText("Pushed Assignments", buf.data, es);
	shoal_explain_handler_lines(shoal_call_method_kw(shoal_scan_handler(node), "explain_modify",
													 args, kwargs), es);
}

void
shoal_register_direct_callbacks(FdwRoutine *routine)
{
	routine->PlanDirectModify = shoalPlanDirectModify;
	routine->BeginDirectModify = shoalBeginDirectModify;
	routine->IterateDirectModify = shoalIterateDirectModify;
	routine->EndDirectModify = shoalEndDirectModify;
	routine->ExplainDirectModify = shoalExplainDirectModify;
}
