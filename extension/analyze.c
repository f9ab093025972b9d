/*-------------------------------------------------------------------------
 * analyze.c
 *		ANALYZE of a foreign table: a random sample of its rows, from its handler.
 *
 * Without AnalyzeForeignTable PostgreSQL skips a foreign table with a
 * WARNING and leaves it out of its partitioned parent's statistics, so
 * ANALYZE of a distributed table described its local partitions only.  A
 * handler that says `can_analyze = True` tells the table's size
 * (analyze_size: its pages set its share of a parent's sample) and returns
 * a random sample of about as many rows as ANALYZE wants (analyze_sample),
 * decoded as a scan's rows are.  What comes is sampled again here, as
 * PostgreSQL samples a table (a reservoir: every row equally likely), so a
 * handler whose row count was off returns more rows, never a biased sample.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "executor/tuptable.h"
#include "foreign/fdwapi.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/sampling.h"

typedef struct SampleState
{
	PyObject   *handler;
	PyObject   *iterator;
	ShoalRowMap map;
	ShoalBinaryReader reader;
	TupleTableSlot *slot;
} SampleState;

static void
release_sample(SampleState *state)
{
	shoal_binary_release(&state->reader);
	Py_CLEAR(state->iterator);	/* a generator's finally blocks stop the remote request */
	shoal_pgmodule_demote();
	Py_CLEAR(state->handler);
	shoal_rowmap_release(&state->map);
	if (state->slot != NULL)
		ExecDropSingleTupleTableSlot(state->slot);
}

/* The next row of the sample into state->slot; false at its end. */
static bool
next_row(SampleState *state)
{
	for (;;)
	{
		PyObject   *item;

		if (shoal_binary_next(&state->reader, state->slot, state->map.io,
							  state->map.nshort, state->map.short_map,
							  state->map.nlong, state->map.long_map))
			return true;
		if (state->reader.finished)
			return false;
		item = shoal_iter_next(state->iterator, "analyze_sample");
		if (item == NULL)
			return false;
		PG_TRY();
		{
			if (shoal_is_binary_chunk(item))
				shoal_binary_feed(&state->reader, item);
			else
				shoal_row_to_slot(&state->map, item, state->slot);
		}
		PG_FINALLY();
		{
			Py_DECREF(item);
		}
		PG_END_TRY();
		if (!TTS_EMPTY(state->slot))
			return true;
	}
}

static int
acquire_sample(Relation rel, int elevel, HeapTuple *rows, int targrows,
			   double *totalrows, double *totaldeadrows)
{
	SampleState state = {0};
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext tuple_cxt = AllocSetContextCreate(caller, "shoal sample tuple", ALLOCSET_DEFAULT_SIZES);
	List	   *attnums = shoal_live_attrs(rel);
	int			count = 0;
	double		seen = 0;
	double		total = 0;
	double		skip = -1;
	ReservoirStateData reservoir;

	PG_TRY();
	{
		PyObject   *result;

		state.handler = Py_NewRef(shoal_handler_for(RelationGetRelid(rel)));
		shoal_rowmap_init(&state.map, rel, attnums);
		shoal_binary_init(&state.reader);
		state.slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
		result = shoal_call_method(state.handler, "analyze_sample",
								   Py_BuildValue("(Ni)", shoal_column_names(rel, attnums), targrows));
		if (!PyArg_ParseTuple(result, "dO", &total, &state.iterator))
		{
			Py_DECREF(result);
			shoal_python_raise("analyze_sample must return (row count, rows)");
		}
		state.iterator = PyObject_GetIter(state.iterator);
		Py_DECREF(result);
		if (state.iterator == NULL)
			shoal_python_raise("analyze_sample");
		reservoir_init_selection_state(&reservoir, targrows);
		for (;;)
		{
			bool		found;
			int			pos = -1;

			MemoryContextReset(tuple_cxt);
			MemoryContextSwitchTo(tuple_cxt);
			ExecClearTuple(state.slot);
			found = next_row(&state);
			MemoryContextSwitchTo(caller);
			if (!found)
				break;
			/* as analyze.c's acquire_sample_rows: Vitter's algorithm */
			if (count < targrows)
				pos = count++;
			else
			{
				if (skip < 0)
					skip = reservoir_get_next_S(&reservoir, seen, targrows);
				if (skip <= 0)
				{
					pos = (int) (targrows * sampler_random_fract(&reservoir.randstate));
					heap_freetuple(rows[pos]);
				}
				skip -= 1;
			}
			if (pos >= 0)
				rows[pos] = ExecCopySlotHeapTuple(state.slot);
			seen += 1;
		}
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(caller);
		release_sample(&state);
		MemoryContextDelete(tuple_cxt);
	}
	PG_END_TRY();

	*totalrows = Max(total, seen);
	*totaldeadrows = 0;
	ereport(elevel,
			(errmsg("\"%s\": %.0f rows from the handler, %d in the sample, about %.0f rows in all",
					RelationGetRelationName(rel), seen, count, *totalrows)));
	return count;
}

static bool
shoalAnalyzeForeignTable(Relation rel, AcquireSampleRowsFunc *func, BlockNumber *totalpages)
{
	PyObject   *handler = shoal_handler_for(RelationGetRelid(rel));
	PyObject   *size;
	double		pages;
	double		rows;

	if (!shoal_handler_flag(handler, "can_analyze"))
		return false;
	size = shoal_call_method(handler, "analyze_size", PyTuple_New(0));
	if (size == Py_None)
	{
		/* the handler cannot now (a node down): ANALYZE goes on without this table */
		Py_DECREF(size);
		return false;
	}
	if (!PyArg_ParseTuple(size, "dd", &pages, &rows))
	{
		Py_DECREF(size);
		shoal_python_raise("analyze_size must return (pages, rows)");
	}
	Py_DECREF(size);
	*func = acquire_sample;
	*totalpages = (BlockNumber) Min(Max(pages, 1), MaxBlockNumber);
	return true;
}

void
shoal_register_analyze_callbacks(FdwRoutine *routine)
{
	routine->AnalyzeForeignTable = shoalAnalyzeForeignTable;
}
