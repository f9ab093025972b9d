/*-------------------------------------------------------------------------
 * rows.c
 *		Python rows into tuple slots, and slots into Python dicts.
 *
 * A row is a mapping (column name -> value) or a sequence with one value
 * per requested column or one per column of the table.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "executor/tuptable.h"
#include "storage/itemptr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

void
shoal_rowmap_init(ShoalRowMap *map, Relation rel, List *attnums)
{
	TupleDesc	desc = RelationGetDescr(rel);
	ListCell   *lc;
	int			i = 0;

	map->natts = desc->natts;
	map->io = palloc0(sizeof(ShoalTypeIO) * desc->natts);
	map->io_ready = palloc0(sizeof(bool) * desc->natts);
	map->nshort = list_length(attnums);
	map->short_map = palloc(sizeof(AttrNumber) * (map->nshort + 1));
	map->short_keys = palloc0(sizeof(PyObject *) * (map->nshort + 1));
	foreach(lc, attnums)
	{
		AttrNumber	attnum = lfirst_int(lc);

		map->short_map[i] = attnum;
		if (attnum == SelfItemPointerAttributeNumber)
			map->short_keys[i] = PyUnicode_FromString("ctid");
		else
			map->short_keys[i] = shoal_cstring_to_py(NameStr(TupleDescAttr(desc, attnum - 1)->attname));
		if (map->short_keys[i] == NULL)
			shoal_python_raise("building column names");
		if (attnum > 0)
			shoal_rowmap_prepare(map, desc, attnum);
		i++;
	}
	/* all columns, requested ones decoded and the others skipped */
	map->nlong = 0;
	map->long_map = palloc(sizeof(AttrNumber) * (desc->natts + 1));
	for (int a = 0; a < desc->natts; a++)
	{
		if (TupleDescAttr(desc, a)->attisdropped)
			continue;
		map->long_map[map->nlong++] = list_member_int(attnums, a + 1) ? a + 1 : 0;
	}
}

void
shoal_rowmap_prepare(ShoalRowMap *map, TupleDesc desc, AttrNumber attnum)
{
	Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);

	if (map->io_ready[attnum - 1])
		return;
	shoal_typeio_init(&map->io[attnum - 1], att->atttypid, att->atttypmod);
	map->io_ready[attnum - 1] = true;
}

void
shoal_rowmap_release(ShoalRowMap *map)
{
	for (int i = 0; map->short_keys && i < map->nshort; i++)
		Py_CLEAR(map->short_keys[i]);
}

static void
store_value(ShoalRowMap *map, TupleTableSlot *slot, AttrNumber attnum, PyObject *value)
{
	if (attnum == SelfItemPointerAttributeNumber)
	{
		/* the row id, in tid's text form "(block,offset)" */
		PyObject   *str = value == Py_None ? NULL : PyObject_Str(value);
		const char *text = str ? PyUnicode_AsUTF8(str) : NULL;

		if (text == NULL)
		{
			Py_XDECREF(str);
			if (value == Py_None)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("a row from the handler has a null ctid")));
			shoal_python_raise("reading a row's ctid");
		}
		PG_TRY();
		{
			ItemPointer tid = (ItemPointer) DatumGetPointer(DirectFunctionCall1(tidin, CStringGetDatum(text)));

			ItemPointerCopy(tid, &slot->tts_tid);
		}
		PG_FINALLY();
		{
			Py_DECREF(str);
		}
		PG_END_TRY();
		return;
	}
	slot->tts_values[attnum - 1] = shoal_py_to_datum(value, &map->io[attnum - 1],
													 &slot->tts_isnull[attnum - 1]);
}

/*
 * Store a Python row in slot (values allocated in the current memory
 * context).  The caller keeps its reference to row.
 */
void
shoal_row_to_slot(ShoalRowMap *map, PyObject *row, TupleTableSlot *slot)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);

	if (PyDict_Check(row))
	{
		for (int i = 0; i < map->nshort; i++)
		{
			PyObject   *value = PyDict_GetItemWithError(row, map->short_keys[i]);

			if (value == NULL && PyErr_Occurred())
				shoal_python_raise("reading a row");
			if (value != NULL)
				store_value(map, slot, map->short_map[i], value);
		}
	}
	else if (PyMapping_Check(row) && !PySequence_Check(row))
	{
		for (int i = 0; i < map->nshort; i++)
		{
			PyObject   *value = PyObject_GetItem(row, map->short_keys[i]);

			if (value == NULL)
			{
				if (!PyErr_ExceptionMatches(PyExc_KeyError))
					shoal_python_raise("reading a row");
				PyErr_Clear();
				continue;
			}
			PG_TRY();
			{
				store_value(map, slot, map->short_map[i], value);
			}
			PG_FINALLY();
			{
				Py_DECREF(value);
			}
			PG_END_TRY();
		}
	}
	else
	{
		PyObject   *seq = PySequence_Fast(row, "a row must be a mapping, a sequence or bytes");
		Py_ssize_t	n;
		const AttrNumber *attmap;

		if (seq == NULL)
			shoal_python_raise("reading a row");
		n = PySequence_Fast_GET_SIZE(seq);
		if (n == map->nshort)
			attmap = map->short_map;
		else if (n == map->nlong)
			attmap = map->long_map;
		else
		{
			Py_DECREF(seq);
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("a row from the handler has %zd values, expected %d (the requested "
							"columns) or %d (all columns)", n, map->nshort, map->nlong)));
		}
		PG_TRY();
		{
			for (Py_ssize_t i = 0; i < n; i++)
				if (attmap[i] != 0)
					store_value(map, slot, attmap[i], PySequence_Fast_GET_ITEM(seq, i));
		}
		PG_FINALLY();
		{
			Py_DECREF(seq);
		}
		PG_END_TRY();
	}
	ExecStoreVirtualTuple(slot);
}

/*
 * The given columns of slot as a new dict.  Names and types come from the
 * relation, not from the slot: an INSERT may hand the FDW its subplan's
 * slot (e.g. a VALUES scan), whose descriptor has other column names.
 */
PyObject *
shoal_slot_to_dict(TupleTableSlot *slot, Relation rel, List *attnums, bool as_text)
{
	TupleDesc	desc = RelationGetDescr(rel);
	PyObject   *dict = PyDict_New();
	int			nestlevel = as_text ? shoal_portable_output_begin() : -1;
	ListCell   *lc;

	if (dict == NULL)
		shoal_python_raise("building a row");
	slot_getallattrs(slot);
	foreach(lc, attnums)
	{
		AttrNumber	attnum = lfirst_int(lc);
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		Datum		datum = slot->tts_values[attnum - 1];
		bool		isnull = slot->tts_isnull[attnum - 1];
		PyObject   *value;

		/* the type's own text form: exact for every type, whatever Python can represent */
		value = as_text ? shoal_datum_to_text_py(datum, isnull, att->atttypid)
			: shoal_datum_to_py(datum, isnull, att->atttypid);
		if (value == NULL || PyDict_SetItemString(dict, NameStr(att->attname), value) < 0)
		{
			Py_XDECREF(value);
			Py_DECREF(dict);
			shoal_python_raise("building a row");
		}
		Py_DECREF(value);
	}
	shoal_portable_output_end(nestlevel);
	return dict;
}
