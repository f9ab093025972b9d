/*-------------------------------------------------------------------------
 * options.c
 *		Validation of shoal_fdw options.
 *
 * Which options exist and what they may hold is decided in Python
 * (shoal.fdw.options), which also asks a wrapper class named by `wrapper`
 * to check its own options; this file only hands the list over.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "access/reloptions.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"

PG_FUNCTION_INFO_V1(shoal_fdw_validator);

PyObject *
shoal_options_to_py(List *options)
{
	PyObject   *dict;
	ListCell   *lc;

	shoal_python_ensure();
	dict = PyDict_New();
	if (dict == NULL)
		shoal_python_raise("building options");
	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);
		PyObject   *value = shoal_cstring_to_py(defGetString(def));

		if (value == NULL || PyDict_SetItemString(dict, def->defname, value) < 0)
		{
			Py_XDECREF(value);
			Py_DECREF(dict);
			shoal_python_raise("building options");
		}
		Py_DECREF(value);
	}
	return dict;
}

Datum
shoal_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	const char *kind;
	PyObject   *dict;
	PyObject   *result;

	if (options == NIL)
		PG_RETURN_VOID();

	switch (catalog)
	{
		case ForeignDataWrapperRelationId:
			kind = "wrapper";
			break;
		case ForeignServerRelationId:
			kind = "server";
			break;
		case UserMappingRelationId:
			kind = "user mapping";
			break;
		case ForeignTableRelationId:
			kind = "table";
			break;
		case AttributeRelationId:
			kind = "column";
			break;
		default:
			kind = "unknown";
			break;
	}

	dict = shoal_options_to_py(options);
	result = PyObject_CallFunction(shoal_host_attr("validate_options"), "sO", kind, dict);
	Py_DECREF(dict);
	if (result == NULL)
		shoal_python_raise("validating options");
	Py_DECREF(result);
	PG_RETURN_VOID();
}
