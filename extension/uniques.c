/*-------------------------------------------------------------------------
 * uniques.c
 *		A unique constraint or index added to a distributed table after it was
 *		distributed, made on one of its partitions.
 *
 * PostgreSQL allows no unique index on a partitioned table with foreign
 * partitions, so a distributed table's keys live on its partitions, which is
 * exact when they include the distribution column (the rows of one key all
 * hash to one partition).  shoal.sharding.uniques calls
 * shoal._add_unique(statement, partition, column) for every partition, on
 * the node holding it: the statement (ALTER TABLE ... ADD PRIMARY KEY /
 * UNIQUE / EXCLUDE, or CREATE UNIQUE INDEX) is parsed here, checked, pointed
 * at the partition and run, from its parse tree rather than rewritten text.
 * Names are left to PostgreSQL, as for the keys declared with the table:
 * index names are unique per schema, and a node holds several partitions.
 *
 * The handlers of foreign partitions keep the remote keys they have seen
 * (an upsert needs them), so every node then has its backends rebuild them:
 * shoal._forget_partitions(table).
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "catalog/pg_inherits.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "tcop/dest.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(shoal_add_unique);
PG_FUNCTION_INFO_V1(shoal_forget_partitions);

static bool
names_column(List *names, const char *column)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp(strVal(lfirst(lc)), column) == 0)
			return true;
	return false;
}

/* Does the constraint's key include the column (with = in an exclusion constraint)? */
static bool
constraint_has_key(Constraint *constraint, const char *column)
{
	ListCell   *lc;

	if (constraint->contype != CONSTR_EXCLUSION)
		return names_column(constraint->keys, column);
	foreach(lc, constraint->exclusions)
	{
		List	   *pair = lfirst(lc);
		IndexElem  *elem = linitial(pair);
		List	   *operator = lsecond(pair);

		if (elem->name != NULL && strcmp(elem->name, column) == 0 &&
			strcmp(strVal(llast(operator)), "=") == 0)
			return true;
	}
	return false;
}

static void
refuse_key(const char *what, const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
			 errmsg("the unique %s added to a distributed table does not include its distribution column \"%s\"",
					what, column),
			 errhint("Uniqueness is enforced per partition: it must include the distribution column "
					 "(with = in an exclusion constraint).")));
}

/* The ALTER TABLE's constraints, checked, unnamed and pointed at the partition. */
static void
retarget_alter(AlterTableStmt *stmt, RangeVar *partition, const char *column)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);
		Constraint *constraint = (Constraint *) cmd->def;

		if (cmd->subtype != AT_AddConstraint || constraint == NULL || !IsA(constraint, Constraint) ||
			(constraint->contype != CONSTR_PRIMARY && constraint->contype != CONSTR_UNIQUE &&
			 constraint->contype != CONSTR_EXCLUSION))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("add unique constraints to a distributed table in an ALTER TABLE of their own"),
					 errhint("Run the other changes in another statement.")));
		if (constraint->indexname != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("ADD CONSTRAINT ... USING INDEX is not supported on distributed tables"),
					 errhint("Name the columns instead: each partition gets its own index.")));
		if (!constraint_has_key(constraint, column))
			refuse_key("constraint", column);
		constraint->conname = NULL;
	}
	stmt->relation = partition;
}

static void
retarget_index(IndexStmt *stmt, RangeVar *partition, const char *column)
{
	ListCell   *lc;
	bool		found = false;

	foreach(lc, stmt->indexParams)
	{
		IndexElem  *elem = lfirst(lc);

		found |= elem->name != NULL && strcmp(elem->name, column) == 0;
	}
	if (!found)
		refuse_key("index", column);
	stmt->idxname = NULL;
	stmt->if_not_exists = false;
	stmt->relation = partition;
}

/*
 * shoal._add_unique(statement text, partition regclass, column name): run
 * the statement's unique constraints or index on the partition.
 */
Datum
shoal_add_unique(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			partition = PG_GETARG_OID(1);
	const char *column = NameStr(*PG_GETARG_NAME(2));
	List	   *parsed = raw_parser(sql, RAW_PARSE_DEFAULT);
	Node	   *stmt;
	char	   *relname = get_rel_name(partition);
	RangeVar   *target;
	PlannedStmt *pstmt;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", partition)));
	target = makeRangeVar(get_namespace_name(get_rel_namespace(partition)), relname, -1);
	if (list_length(parsed) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shoal._add_unique takes one statement")));
	stmt = ((RawStmt *) linitial(parsed))->stmt;
	if (IsA(stmt, AlterTableStmt) && ((AlterTableStmt *) stmt)->objtype == OBJECT_TABLE)
		retarget_alter((AlterTableStmt *) stmt, target, column);
	else if (IsA(stmt, IndexStmt) && ((IndexStmt *) stmt)->unique)
		retarget_index((IndexStmt *) stmt, target, column);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shoal._add_unique takes ALTER TABLE ... ADD a unique constraint, or CREATE UNIQUE INDEX")));

	pstmt = makeNode(PlannedStmt);
	pstmt->commandType = CMD_UTILITY;
	pstmt->canSetTag = false;
	pstmt->utilityStmt = stmt;
	pstmt->stmt_location = -1;
	pstmt->stmt_len = 0;
	ProcessUtility(pstmt, sql, false, PROCESS_UTILITY_QUERY, NULL, NULL, None_Receiver, NULL);
	PG_RETURN_VOID();
}

/*
 * shoal._forget_partitions(table regclass): when the transaction commits,
 * every backend of this node drops what it keeps about the table's
 * partitions (their handlers, plans using them).
 */
Datum
shoal_forget_partitions(PG_FUNCTION_ARGS)
{
	ListCell   *lc;

	foreach(lc, find_inheritance_children(PG_GETARG_OID(0), NoLock))
		CacheInvalidateRelcacheByRelid(lfirst_oid(lc));
	PG_RETURN_VOID();
}
