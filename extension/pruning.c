/*-------------------------------------------------------------------------
 * pruning.c
 *		The cost of a plan that prunes partitions when the executor starts.
 *
 * A prepared statement on a partitioned table, `... WHERE key = $1`, can
 * run a generic plan: an Append over every partition, of which all but one
 * are pruned at executor start once $1 is known (initial pruning).  The
 * planner costs that Append as if every partition ran, so the plan cache,
 * which keeps a generic plan only when it costs less than the custom plans
 * it has seen, plans every execution anew.  On a distributed table that is
 * the largest single cost of a point query in the backend: measured with
 * pgbench -S over two nodes, the backend's CPU per query fell by 30% with
 * plan_cache_mode = force_generic_plan.
 *
 * So the cost of such an Append is corrected to what the executor will
 * run.  When its initial pruning steps keep one partition (equality on the
 * whole key), it costs what its cheapest subplan costs: whatever the value,
 * it runs the subplan a custom plan would have chosen for it, without the
 * planning.  When they keep more (a range, an IN list), it costs their
 * expected share of the whole (a third for a range, as the planner guesses
 * for an inequality).  The nodes above it are lowered by as much.  Only
 * costs change, never the plan: the plan cache then compares like with
 * like, and plan_cache_mode = force_custom_plan still plans every time.
 * Plain SELECTs only (see shoal_cost_initial_pruning).
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/htup_details.h"
#include "access/stratnum.h"
#include "catalog/pg_partitioned_table.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "parser/parsetree.h"
#include "utils/selfuncs.h"
#include "utils/syscache.h"

/* The partitioning of a table: its strategy and number of key columns (0 when unknown). */
static void
partitioning_of(Oid relid, char *strategy, int *natts)
{
	HeapTuple	tuple = SearchSysCache1(PARTRELID, ObjectIdGetDatum(relid));

	*strategy = 0;
	*natts = 0;
	if (!HeapTupleIsValid(tuple))
		return;
	*strategy = ((Form_pg_partitioned_table) GETSTRUCT(tuple))->partstrat;
	*natts = ((Form_pg_partitioned_table) GETSTRUCT(tuple))->partnatts;
	ReleaseSysCache(tuple);
}

/*
 * The share of the partitions one pruning step keeps.  Steps refer to
 * earlier steps by id, so shares[] holds the result of every step so far.
 */
static double
step_share(PartitionPruneStep *step, double *shares, int nshares, char strategy, int natts,
		   double one)
{
	if (IsA(step, PartitionPruneStepOp))
	{
		PartitionPruneStepOp *op = (PartitionPruneStepOp *) step;
		int			keys = list_length(op->exprs) + bms_num_members(op->nullkeys);

		/* hash pruning steps always name every key: one partition */
		if (strategy == PARTITION_STRATEGY_HASH)
			return one;
		if (op->opstrategy == BTEqualStrategyNumber && keys == natts)
			return one;
		if (op->opstrategy == BTLessStrategyNumber || op->opstrategy == BTLessEqualStrategyNumber ||
			op->opstrategy == BTGreaterStrategyNumber || op->opstrategy == BTGreaterEqualStrategyNumber ||
			op->opstrategy == BTEqualStrategyNumber)
			return Max(one, DEFAULT_INEQ_SEL);
		return 1.0;				/* <> on a list key, and what we do not know */
	}
	else if (IsA(step, PartitionPruneStepCombine))
	{
		PartitionPruneStepCombine *combine = (PartitionPruneStepCombine *) step;
		double		share = combine->combineOp == PARTPRUNE_COMBINE_UNION ? 0.0 : 1.0;
		ListCell   *lc;

		foreach(lc, combine->source_stepids)
		{
			int			id = lfirst_int(lc);
			double		source = id >= 0 && id < nshares ? shares[id] : 1.0;

			if (combine->combineOp == PARTPRUNE_COMBINE_UNION)
				share = Min(1.0, share + source);
			else
				share = Min(share, source);
		}
		/* a combination of no step keeps everything */
		return combine->source_stepids == NIL ? 1.0 : share;
	}
	return 1.0;
}

/*
 * How many of an Append's subplans its initial pruning is expected to
 * keep; all of them when it has none (or prunes in a way not estimated
 * here).
 */
static double
expected_subplans(PlannedStmt *stmt, PartitionPruneInfo *prune, int nsubplans)
{
	PartitionedRelPruneInfo *root;
	double	   *shares;
	double		share = 1.0;
	char		strategy;
	int			natts;
	int			nsteps = 0;
	ListCell   *lc;

	/* one partitioned table (not a UNION ALL of several) and nothing beside it */
	if (prune == NULL || list_length(prune->prune_infos) != 1 || prune->other_subplans != NULL ||
		nsubplans < 2)
		return nsubplans;
	/* its top level decides: lower levels are left out, which can only overestimate */
	root = linitial_node(PartitionedRelPruneInfo, linitial(prune->prune_infos));
	if (root->initial_pruning_steps == NIL)
		return nsubplans;

	partitioning_of(rt_fetch(root->rtindex, stmt->rtable)->relid, &strategy, &natts);
	if (natts == 0)
		return nsubplans;

	foreach(lc, root->initial_pruning_steps)
		nsteps = Max(nsteps, ((PartitionPruneStep *) lfirst(lc))->step_id + 1);
	shares = palloc(sizeof(double) * nsteps);
	for (int i = 0; i < nsteps; i++)
		shares[i] = 1.0;
	foreach(lc, root->initial_pruning_steps)
	{
		PartitionPruneStep *step = (PartitionPruneStep *) lfirst(lc);

		share = step_share(step, shares, nsteps, strategy, natts,
						   1.0 / Max(bms_num_members(root->present_parts), 1));
		shares[step->step_id] = share;
	}
	pfree(shares);
	/* the last step's result is what the executor keeps; at least one subplan */
	return Max(share * nsubplans, 1.0);
}

/*
 * The cost of an Append (or MergeAppend) over plans, of which expected
 * survive pruning.  When one does, it runs exactly the subplan a custom
 * plan would have chosen for the value, so it costs what its cheapest
 * subplan costs: never more than a custom plan, which also pays for
 * planning.  Otherwise the survivors' share of the whole.
 */
static Cost
pruned_cost(Plan *plan, List *plans, double expected)
{
	Cost		cheapest = plan->total_cost;
	ListCell   *lc;

	if (expected >= list_length(plans))
		return plan->total_cost;
	if (expected > 1.0 + 1e-9)
		return plan->total_cost * expected / list_length(plans);
	foreach(lc, plans)
		cheapest = Min(cheapest, ((Plan *) lfirst(lc))->total_cost);
	return cheapest;
}

static Cost correct_plan(PlannedStmt *stmt, Plan *plan);

static Cost
correct_list(PlannedStmt *stmt, List *plans)
{
	Cost		saved = 0;
	ListCell   *lc;

	foreach(lc, plans)
		saved += correct_plan(stmt, (Plan *) lfirst(lc));
	return saved;
}

/* Lowers the costs of plan and of what it runs; returns how much it took off plan's total. */
static Cost
correct_plan(PlannedStmt *stmt, Plan *plan)
{
	Cost		saved;
	List	   *pruned = NIL;
	PartitionPruneInfo *prune = NULL;

	if (plan == NULL)
		return 0;
	check_stack_depth();
	saved = correct_plan(stmt, plan->lefttree) + correct_plan(stmt, plan->righttree);
	switch (nodeTag(plan))
	{
		case T_Append:
			pruned = ((Append *) plan)->appendplans;
			prune = ((Append *) plan)->part_prune_info;
			saved += correct_list(stmt, pruned);
			break;
		case T_MergeAppend:
			pruned = ((MergeAppend *) plan)->mergeplans;
			prune = ((MergeAppend *) plan)->part_prune_info;
			saved += correct_list(stmt, pruned);
			break;
		case T_SubqueryScan:
			saved += correct_plan(stmt, ((SubqueryScan *) plan)->subplan);
			break;
		case T_CustomScan:
			saved += correct_list(stmt, ((CustomScan *) plan)->custom_plans);
			break;
		default:
			break;
	}
	plan->total_cost -= saved;
	if (prune != NULL)
	{
		Cost		after = pruned_cost(plan, pruned, expected_subplans(stmt, prune, list_length(pruned)));

		saved += plan->total_cost - after;
		plan->total_cost = after;
	}
	plan->startup_cost = Min(plan->startup_cost, plan->total_cost);
	return saved;
}

/*
 * Corrects the costs of stmt's Appends that prune when the executor starts,
 * in a plain SELECT only.  INSERT, UPDATE, DELETE and SELECT ... FOR UPDATE
 * keep PostgreSQL's costs, so custom plans: PostgreSQL 15 starts a generic
 * write plan by opening (and locking) every partition, pruned or not, and
 * the TPROC-C benchmark ran 20% slower with generic plans forced.
 */
void
shoal_cost_initial_pruning(PlannedStmt *stmt)
{
	if (stmt->commandType == CMD_SELECT && stmt->rowMarks == NIL)
		correct_plan(stmt, stmt->planTree);
}
