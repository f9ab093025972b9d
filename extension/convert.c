/*-------------------------------------------------------------------------
 * convert.c
 *		Values between PostgreSQL Datums and Python objects.
 *
 * The common scalar types are converted here without help; every other
 * type goes through Python (shoal.fdw.host.from_binary / to_text), which
 * decides how its values look in Python.  The binary fast path of scans
 * never comes here: it decodes with receive functions (binary.c).
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

void
shoal_typeio_init(ShoalTypeIO *io, Oid typoid, int32 typmod)
{
	char		typdelim;
	Oid			func;

	memset(io, 0, sizeof(*io));
	io->typoid = typoid;
	io->typmod = typmod;

	get_type_io_data(typoid, IOFunc_input, &io->typlen, &io->typbyval, &io->typalign,
					 &typdelim, &io->typioparam, &func);
	fmgr_info(func, &io->infunc);

	get_type_io_data(typoid, IOFunc_receive, &io->typlen, &io->typbyval, &io->typalign,
					 &typdelim, &io->typioparam, &func);
	if (OidIsValid(func))
	{
		fmgr_info(func, &io->recvfunc);
		io->have_recv = true;
	}

	/* text without a length limit needs no input function */
	io->fast_text = (typoid == TEXTOID || (typoid == VARCHAROID && typmod < 0));
}

/* A UTF-8 C string in the server encoding as a Python str; NULL with an exception on failure. */
static PyObject *
server_text_to_py(const char *s, int len)
{
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
		return PyUnicode_DecodeUTF8(s, len, "surrogateescape");
	else
	{
		char	   *utf8 = pg_server_to_any(s, len, PG_UTF8);
		PyObject   *result = PyUnicode_DecodeUTF8(utf8, strlen(utf8), "strict");

		if (utf8 != s)
			pfree(utf8);
		return result;
	}
}

PyObject *
shoal_cstring_to_py(const char *s)
{
	return server_text_to_py(s, strlen(s));
}

/*
 * A Datum as a new Python object.  Returns NULL with a Python exception set
 * on failure (never throws a PostgreSQL error for Python-side problems).
 */
PyObject *
shoal_datum_to_py(Datum value, bool isnull, Oid typoid)
{
	if (isnull)
		Py_RETURN_NONE;

	switch (typoid)
	{
		case BOOLOID:
			return PyBool_FromLong(DatumGetBool(value));
		case INT2OID:
			return PyLong_FromLong(DatumGetInt16(value));
		case INT4OID:
			return PyLong_FromLong(DatumGetInt32(value));
		case INT8OID:
			return PyLong_FromLongLong(DatumGetInt64(value));
		case OIDOID:
			return PyLong_FromUnsignedLong(DatumGetObjectId(value));
		case FLOAT4OID:
			return PyFloat_FromDouble(DatumGetFloat4(value));
		case FLOAT8OID:
			return PyFloat_FromDouble(DatumGetFloat8(value));
		case NAMEOID:
			return shoal_cstring_to_py(NameStr(*DatumGetName(value)));
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			{
				text	   *t = DatumGetTextPP(value);
				PyObject   *result = server_text_to_py(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));

				if ((Pointer) t != DatumGetPointer(value))
					pfree(t);
				return result;
			}
		case BYTEAOID:
			{
				bytea	   *b = DatumGetByteaPP(value);
				PyObject   *result = PyBytes_FromStringAndSize(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));

				if ((Pointer) b != DatumGetPointer(value))
					pfree(b);
				return result;
			}
		default:
			break;
	}

	/* A domain's values look like its base type's (its send function is the base's). */
	{
		Oid			base = getBaseType(typoid);

		if (base != typoid)
			return shoal_datum_to_py(value, false, base);
	}

	/* Everything else: binary representation, loaded by Python; text if it cannot. */
	{
		Oid			sendfunc = InvalidOid;
		bool		isvarlena;
		PyObject   *result = NULL;
		HeapTuple	tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typoid));

		if (HeapTupleIsValid(tp))
		{
			sendfunc = ((Form_pg_type) GETSTRUCT(tp))->typsend;
			ReleaseSysCache(tp);
		}
		if (OidIsValid(sendfunc))
		{
			bytea	   *bin;
			PyObject   *data;

			getTypeBinaryOutputInfo(typoid, &sendfunc, &isvarlena);
			bin = OidSendFunctionCall(sendfunc, value);
			data = PyBytes_FromStringAndSize(VARDATA(bin), VARSIZE(bin) - VARHDRSZ);
			pfree(bin);
			if (data == NULL)
				return NULL;
			result = PyObject_CallFunction(shoal_host_attr("from_binary"), "IO", typoid, data);
			Py_DECREF(data);
			if (result != Py_NotImplemented)
				return result;
			Py_DECREF(result);
		}
		{
			Oid			outfunc;
			char	   *s;

			getTypeOutputInfo(typoid, &outfunc, &isvarlena);
			s = OidOutputFunctionCall(outfunc, value);
			result = PyObject_CallFunction(shoal_host_attr("from_text"), "IN", typoid,
										   shoal_cstring_to_py(s));
			pfree(s);
			return result;
		}
	}
}

/*
 * Text output that every node parses back to the same value, whatever this
 * session's settings: ISO dates (unambiguous under any DateStyle), postgres
 * intervals, shortest exact floats.  Returns the GUC nest level to end with
 * shoal_portable_output_end, or -1 when the session already has those
 * settings (the common case, which costs nothing).  An error ends the nest
 * level with the transaction.
 */
int
shoal_portable_output_begin(void)
{
	int			nestlevel;

	if (DateStyle == USE_ISO_DATES && IntervalStyle == INTSTYLE_POSTGRES && extra_float_digits > 0)
		return -1;
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("datestyle", "ISO", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("intervalstyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "1", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
shoal_portable_output_end(int nestlevel)
{
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
}

/* A Datum in its type's text form (see shoal_portable_output_begin) as a Python str, or None. */
PyObject *
shoal_datum_to_text_py(Datum value, bool isnull, Oid typoid)
{
	Oid			outfunc;
	bool		isvarlena;
	char	   *s;
	PyObject   *result;

	if (isnull)
		Py_RETURN_NONE;
	getTypeOutputInfo(typoid, &outfunc, &isvarlena);
	s = OidOutputFunctionCall(outfunc, value);
	result = shoal_cstring_to_py(s);
	pfree(s);
	return result;
}

static Datum
text_datum_from_utf8(const char *utf8, Py_ssize_t len)
{
	char	   *server;
	Datum		result;

	if (memchr(utf8, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("a Python string with a NUL character cannot be stored as text")));
	server = pg_any_to_server(utf8, len, PG_UTF8);
	if (server == utf8)
		result = PointerGetDatum(cstring_to_text_with_len(utf8, len));
	else
	{
		result = PointerGetDatum(cstring_to_text(server));
		pfree(server);
	}
	return result;
}

static Datum
input_from_utf8(ShoalTypeIO *io, const char *utf8, Py_ssize_t len)
{
	char	   *server = pg_any_to_server(utf8, len, PG_UTF8);
	Datum		result;

	if (server == utf8)
		server = pnstrdup(utf8, len);
	result = InputFunctionCall(&io->infunc, server, io->typioparam, io->typmod);
	pfree(server);
	return result;
}

static pg_attribute_noreturn() void
out_of_range(ShoalTypeIO *io)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("value out of range for type %s", format_type_be(io->typoid))));
}

/*
 * A Python object as a Datum of io's type (allocated in the current memory
 * context).  Throws a PostgreSQL error if it does not fit the type; the
 * caller keeps its reference to obj.
 */
Datum
shoal_py_to_datum(PyObject *obj, ShoalTypeIO *io, bool *isnull)
{
	*isnull = false;
	if (obj == Py_None)
	{
		*isnull = true;
		return (Datum) 0;
	}

	switch (io->typoid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
			if (PyLong_Check(obj))
			{
				int			overflow;
				long long	v = PyLong_AsLongLongAndOverflow(obj, &overflow);

				if (overflow)
					out_of_range(io);
				if (v == -1 && PyErr_Occurred())
					shoal_python_raise("converting an int");
				if (io->typoid == INT2OID)
				{
					if (v < PG_INT16_MIN || v > PG_INT16_MAX)
						out_of_range(io);
					return Int16GetDatum((int16) v);
				}
				if (io->typoid == INT4OID)
				{
					if (v < PG_INT32_MIN || v > PG_INT32_MAX)
						out_of_range(io);
					return Int32GetDatum((int32) v);
				}
				return Int64GetDatum((int64) v);
			}
			break;
		case FLOAT4OID:
		case FLOAT8OID:
			if (PyFloat_Check(obj) || PyLong_Check(obj))
			{
				double		v = PyFloat_AsDouble(obj);

				if (v == -1.0 && PyErr_Occurred())
					shoal_python_raise("converting a float");
				return io->typoid == FLOAT4OID ? Float4GetDatum((float4) v) : Float8GetDatum(v);
			}
			break;
		case BOOLOID:
			if (PyBool_Check(obj))
				return BoolGetDatum(obj == Py_True);
			break;
		case BYTEAOID:
			if (PyBytes_Check(obj) || PyByteArray_Check(obj) || PyMemoryView_Check(obj))
			{
				Py_buffer	view;
				bytea	   *result;

				if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
					shoal_python_raise("converting bytes");
				result = palloc(VARHDRSZ + view.len);
				SET_VARSIZE(result, VARHDRSZ + view.len);
				memcpy(VARDATA(result), view.buf, view.len);
				PyBuffer_Release(&view);
				return PointerGetDatum(result);
			}
			break;
		default:
			break;
	}

	if (PyUnicode_Check(obj))
	{
		Py_ssize_t	len;
		const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);

		if (utf8 == NULL)
			shoal_python_raise("converting a str");
		if (io->fast_text)
			return text_datum_from_utf8(utf8, len);
		return input_from_utf8(io, utf8, len);
	}

	/* Anything else: Python writes it in the type's text syntax. */
	{
		PyObject   *text = PyObject_CallFunction(shoal_host_attr("to_text"), "OI", obj, io->typoid);
		Py_ssize_t	len;
		const char *utf8;
		Datum		result;

		if (text == NULL)
			shoal_python_raise("converting a value");
		if (text == Py_None)
		{
			Py_DECREF(text);
			*isnull = true;
			return (Datum) 0;
		}
		utf8 = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;
		if (utf8 == NULL)
		{
			Py_DECREF(text);
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_TypeError, "shoal.fdw.host.to_text must return a str");
			shoal_python_raise("converting a value");
		}
		PG_TRY();
		{
			result = io->fast_text ? text_datum_from_utf8(utf8, len) : input_from_utf8(io, utf8, len);
		}
		PG_FINALLY();
		{
			Py_DECREF(text);
		}
		PG_END_TRY();
		return result;
	}
}
