/*-------------------------------------------------------------------------
 * handlers.c
 *		One Python handler instance per foreign table, per backend.
 *
 * A handler is built from the merged server and table options and the
 * table's columns, then kept until its table or server changes (relcache
 * and syscache invalidations).
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/table.h"
#include "foreign/foreign.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

typedef struct HandlerEntry
{
	Oid			relid;
	PyObject   *handler;
	bool		valid;
} HandlerEntry;

static HTAB *handler_cache = NULL;

/*
 * Handlers replaced after an invalidation, released at the end of the
 * transaction: the planner keeps borrowed references (RelOptInfo) while it
 * may look the same table up again, and an invalidation can arrive in
 * between (a lock taken on another relation processes it).
 */
static PyObject *retired = NULL;

static void
retire(PyObject *handler)
{
	if (handler == NULL)
		return;
	if (retired == NULL && (retired = PyList_New(0)) == NULL)
		shoal_python_raise("keeping a replaced handler");
	if (PyList_Append(retired, handler) < 0)
		shoal_python_raise("keeping a replaced handler");
	Py_DECREF(handler);
}

/* At the end of a transaction: nothing borrowed survives it. */
void
shoal_handlers_release_retired(void)
{
	Py_CLEAR(retired);
}

static void
invalidate_relation(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	HandlerEntry *entry;

	if (handler_cache == NULL)
		return;
	/* Python objects are released on next use, not here: no Python in invalidation callbacks. */
	hash_seq_init(&status, handler_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
}

static void
invalidate_all(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_relation(arg, InvalidOid);
}

void
shoal_handlers_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(HandlerEntry);
	handler_cache = hash_create("shoal handlers", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	CacheRegisterRelcacheCallback(invalidate_relation, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, invalidate_all, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNTABLEREL, invalidate_all, (Datum) 0);
}

/* The server's options, then the table's (which win). */
List *
shoal_table_options(Oid relid)
{
	ForeignTable *table = GetForeignTable(relid);
	ForeignServer *server = GetForeignServer(table->serverid);

	return list_concat(list_copy(server->options), table->options);
}

static PyObject *
build_columns(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	PyObject   *columns = PyList_New(0);

	if (columns == NULL)
		shoal_python_raise("building column definitions");
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		PyObject   *options;
		PyObject   *column;

		if (att->attisdropped)
			continue;
		options = shoal_options_to_py(GetForeignColumnOptions(RelationGetRelid(rel), att->attnum));
		column = Py_BuildValue("(NiIiNNN)",
							   shoal_cstring_to_py(NameStr(att->attname)),
							   (int) att->attnum,
							   att->atttypid,
							   (int) att->atttypmod,
							   shoal_cstring_to_py(format_type_with_typemod(att->atttypid,
																			att->atttypmod)),
							   shoal_cstring_to_py(format_type_be(att->atttypid)),
							   options);
		if (column == NULL || PyList_Append(columns, column) < 0)
		{
			Py_XDECREF(column);
			Py_DECREF(columns);
			shoal_python_raise("building column definitions");
		}
		Py_DECREF(column);
	}
	return columns;
}

/* The handler of a foreign table: a borrowed reference, valid until the next invalidation. */
PyObject *
shoal_handler_for(Oid relid)
{
	HandlerEntry *entry;
	bool		found;
	Relation	rel;
	PyObject   *options;
	PyObject   *columns;
	PyObject   *handler;

	entry = hash_search(handler_cache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		entry->handler = NULL;
		entry->valid = false;
	}
	if (entry->valid && entry->handler != NULL)
		return entry->handler;
	retire(entry->handler);
	entry->handler = NULL;

	shoal_python_ensure();
	options = shoal_options_to_py(shoal_table_options(relid));
	rel = table_open(relid, NoLock);
	PG_TRY();
	{
		columns = build_columns(rel);
	}
	PG_FINALLY();
	{
		table_close(rel, NoLock);
	}
	PG_END_TRY();

	handler = PyObject_CallFunction(shoal_host_attr("create_handler"), "INN", relid, options, columns);
	if (handler == NULL)
		shoal_python_raise(psprintf("creating the handler of foreign table %s",
									get_rel_name(relid)));
	/* look the entry up again: the hash may have moved while Python ran */
	entry = hash_search(handler_cache, &relid, HASH_ENTER, &found);
	if (found && entry->handler != NULL)
	{
		PyObject   *previous = entry->handler;

		entry->handler = NULL;
		PG_TRY();
		{
			retire(previous);
		}
		PG_CATCH();
		{
			Py_DECREF(handler);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	entry->handler = handler;
	entry->valid = true;
	return handler;
}

/* Python list of the names of the columns attnums (Integer list, in table order). */
PyObject *
shoal_column_names(Relation rel, List *attnums)
{
	TupleDesc	desc = RelationGetDescr(rel);
	PyObject   *names = PyList_New(0);
	ListCell   *lc;

	if (names == NULL)
		shoal_python_raise("listing columns");
	foreach(lc, attnums)
	{
		int			attnum = lfirst_int(lc);
		Form_pg_attribute att;
		PyObject   *name;

		if (attnum == SelfItemPointerAttributeNumber)
			name = PyUnicode_FromString("ctid");
		else
		{
			if (attnum < 1 || attnum > desc->natts)
				continue;
			att = TupleDescAttr(desc, attnum - 1);
			if (att->attisdropped)
				continue;
			name = shoal_cstring_to_py(NameStr(att->attname));
		}
		if (name == NULL || PyList_Append(names, name) < 0)
		{
			Py_XDECREF(name);
			Py_DECREF(names);
			shoal_python_raise("listing columns");
		}
		Py_DECREF(name);
	}
	return names;
}

/* A boolean class attribute of a handler (exact_quals, text_values...). */
bool
shoal_handler_flag(PyObject *handler, const char *attr)
{
	PyObject   *value = PyObject_GetAttrString(handler, attr);
	int			truth;

	if (value == NULL)
		shoal_python_raise(attr);
	truth = PyObject_IsTrue(value);
	Py_DECREF(value);
	if (truth < 0)
		shoal_python_raise(attr);
	shoal_pgmodule_check();		/* a property may have run anything */
	return truth == 1;
}
