/*-------------------------------------------------------------------------
 * binary.c
 *		Decoding PostgreSQL binary COPY tuple data: the scans' fast path.
 *
 * A handler yields bytes-like chunks of tuples (int16 field count, then per
 * field an int32 length, -1 for NULL, and the value in the type's binary
 * format).  They are read in place, without a Python object per value.  A
 * tuple split across chunks is assembled in `carry`.  Common fixed-width
 * types and text are decoded directly; the rest through receive functions.
 *
 * Text inside the data is in the server encoding, whatever the session's
 * client_encoding: the data comes from a handler, not from the client.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "catalog/pg_type.h"
#include "port/pg_bswap.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

static const char copy_signature[11] = "PGCOPY\n\377\r\n\0";

void
shoal_binary_init(ShoalBinaryReader *r)
{
	memset(r, 0, sizeof(*r));
	initStringInfo(&r->carry);
	initStringInfo(&r->field);
}

bool
shoal_is_binary_chunk(PyObject *item)
{
	return PyBytes_CheckExact(item) || PyByteArray_Check(item) || PyMemoryView_Check(item) ||
		PyBytes_Check(item);
}

static void
release_chunk(ShoalBinaryReader *r)
{
	if (r->have_view)
	{
		PyBuffer_Release(&r->view);
		r->have_view = false;
	}
	Py_CLEAR(r->chunk);
	r->pos = 0;
}

void
shoal_binary_release(ShoalBinaryReader *r)
{
	release_chunk(r);
}

static pg_attribute_noreturn() void
bad_format(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
			 errmsg("invalid binary tuple data from the foreign-data wrapper: %s", why)));
}

/*
 * Consume the COPY header at the reader's position, as far as the current
 * chunk goes: a handler may cut its data anywhere, the header included.
 */
static void
consume_header(ShoalBinaryReader *r)
{
	const char *buf = r->view.buf;
	Size		len = r->view.len;

	while (r->in_header && r->pos < len)
	{
		if (r->header_len < (int) sizeof(r->header))
		{
			Size		take = Min(sizeof(r->header) - r->header_len, len - r->pos);

			memcpy(r->header + r->header_len, buf + r->pos, take);
			r->header_len += take;
			r->pos += take;
			if (r->header_len == (int) sizeof(r->header))
			{
				uint32		flags;
				uint32		extlen;

				if (memcmp(r->header, copy_signature, sizeof(copy_signature)) != 0)
					bad_format("invalid COPY signature");
				memcpy(&flags, r->header + 11, 4);
				/* as COPY FROM: the high half holds critical flags (bit 16, OIDs, is gone) */
				if ((pg_ntoh32(flags) >> 16) != 0)
					bad_format("unrecognized critical flags in COPY header");
				memcpy(&extlen, r->header + 15, 4);
				r->header_skip = pg_ntoh32(extlen);
			}
		}
		else
		{
			Size		take = Min((Size) r->header_skip, len - r->pos);

			r->header_skip -= take;
			r->pos += take;
		}
		if (r->header_len == (int) sizeof(r->header) && r->header_skip == 0)
			r->in_header = false;
	}
}

void
shoal_binary_feed(ShoalBinaryReader *r, PyObject *chunk)
{
	release_chunk(r);
	if (PyObject_GetBuffer(chunk, &r->view, PyBUF_SIMPLE) < 0)
		shoal_python_raise("reading binary tuple data");
	r->have_view = true;
	Py_INCREF(chunk);
	r->chunk = chunk;

	/*
	 * Data that starts with the COPY signature has a header.  Its first byte,
	 * 'P', cannot start tuple data: as a field count it would be over 20000.
	 */
	if (!r->seen_header && r->view.len > 0)
	{
		r->seen_header = true;
		r->in_header = ((const char *) r->view.buf)[0] == copy_signature[0];
		r->header_len = 0;
		r->header_skip = 0;
	}
	if (r->in_header)
		consume_header(r);
}

/* Start over, for a rescan; keeps the buffers. */
void
shoal_binary_reset(ShoalBinaryReader *r)
{
	release_chunk(r);
	resetStringInfo(&r->carry);
	resetStringInfo(&r->field);
	r->seen_header = false;
	r->in_header = false;
	r->header_len = 0;
	r->header_skip = 0;
	r->finished = false;
}

/* Whether the data fed so far stops inside a header or a tuple. */
bool
shoal_binary_incomplete(ShoalBinaryReader *r)
{
	return !r->finished && (r->in_header || r->carry.len > 0);
}

/*
 * How many more bytes the tuple starting at buf needs: 0 when complete,
 * else a lower bound (each call parses as far as it can).
 */
static Size
tuple_bytes_missing(const char *buf, Size avail, Size *tuple_len)
{
	Size		off = 2;
	int16		nfields;
	uint16		n16;

	if (avail < 2)
		return 2 - avail;
	memcpy(&n16, buf, 2);
	nfields = (int16) pg_ntoh16(n16);
	if (nfields == -1)
	{
		*tuple_len = 2;
		return 0;
	}
	if (nfields < 0)
		bad_format("negative field count");
	for (int i = 0; i < nfields; i++)
	{
		uint32		l32;
		int32		len;

		if (avail < off + 4)
			return off + 4 - avail;
		memcpy(&l32, buf + off, 4);
		len = (int32) pg_ntoh32(l32);
		off += 4;
		if (len < -1)
			bad_format("negative field length");
		if (len > 0)
		{
			if (avail < off + len)
				return off + len - avail;
			off += len;
		}
	}
	*tuple_len = off;
	return 0;
}

/* No byte of data[0..len) is outside ASCII. */
static bool
all_ascii(const char *data, int32 len)
{
	uint64		high = 0;
	int32		i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64		word;

		memcpy(&word, data + i, 8);
		high |= word;
	}
	for (; i < len; i++)
		high |= (unsigned char) data[i];
	return (high & UINT64CONST(0x8080808080808080)) == 0;
}

/*
 * Whether a text, varchar or char value, as received, is already what the
 * type's input would make of it under the column's typmod, so that it can
 * be stored as is: the receive functions count its characters to check the
 * limit (and pad a char(n)), which is most of the cost of reading such
 * columns.  A value within the limit in bytes has no more characters than
 * that; a char(n) that arrives n bytes long, all ASCII, has n characters
 * and needs no padding (it is stored padded, so this is the usual case).
 */
static bool
text_fits_typmod(ShoalTypeIO *io, const char *data, int32 len)
{
	int32		limit = io->typmod - VARHDRSZ;

	if (io->typoid == TEXTOID || io->typmod < (int32) VARHDRSZ)
		return true;
	if (io->typoid == VARCHAROID)
		return len <= limit;
	return len == limit && all_ascii(data, len);
}

static Datum
decode_field(ShoalBinaryReader *r, ShoalTypeIO *io, const char *data, int32 len, const char *colname)
{
	switch (io->typoid)
	{
		case INT4OID:
			if (len == 4)
			{
				uint32		v;

				memcpy(&v, data, 4);
				return Int32GetDatum((int32) pg_ntoh32(v));
			}
			break;
		case INT8OID:
			if (len == 8)
			{
				uint64		v;

				memcpy(&v, data, 8);
				return Int64GetDatum((int64) pg_ntoh64(v));
			}
			break;
		case INT2OID:
			if (len == 2)
			{
				uint16		v;

				memcpy(&v, data, 2);
				return Int16GetDatum((int16) pg_ntoh16(v));
			}
			break;
		case FLOAT8OID:
			if (len == 8)
			{
				union
				{
					uint64		i;
					float8		f;
				}			v;

				memcpy(&v.i, data, 8);
				v.i = pg_ntoh64(v.i);
				return Float8GetDatum(v.f);
			}
			break;
		case BOOLOID:
			if (len == 1)
				return BoolGetDatum(data[0] != 0);
			break;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			if (text_fits_typmod(io, data, len))
			{
				/* sent in the server encoding by a shoal node; verified like textrecv does */
				pg_verify_mbstr(GetDatabaseEncoding(), data, len, false);
				return PointerGetDatum(cstring_to_text_with_len(data, len));
			}
			break;
		default:
			break;
	}

	if (!io->have_recv)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("no binary input function available for type %s of column \"%s\"",
						format_type_be(io->typoid), colname)));
	{
		Datum		value;

		resetStringInfo(&r->field);
		appendBinaryStringInfo(&r->field, data, len);
		value = ReceiveFunctionCall(&io->recvfunc, &r->field, io->typioparam, io->typmod);
		if (r->field.cursor != r->field.len)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("incorrect binary data format in column \"%s\"", colname)));
		return value;
	}
}

static void
decode_tuple(ShoalBinaryReader *r, const char *buf, TupleTableSlot *slot, ShoalTypeIO *io,
			 int nfields_short, const AttrNumber *short_map,
			 int nfields_long, const AttrNumber *long_map)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	uint16		n16;
	int			nfields;
	const AttrNumber *map;
	Size		off = 2;

	memcpy(&n16, buf, 2);
	nfields = (int16) pg_ntoh16(n16);
	if (nfields == nfields_short)
		map = short_map;
	else if (nfields == nfields_long)
		map = long_map;
	else
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("binary tuple has %d fields, expected %d (the requested columns) or %d "
						"(all columns)", nfields, nfields_short, nfields_long)));

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);
	for (int i = 0; i < nfields; i++)
	{
		uint32		l32;
		int32		len;
		AttrNumber	attnum = map[i];

		memcpy(&l32, buf + off, 4);
		len = (int32) pg_ntoh32(l32);
		off += 4;
		if (len == -1 || attnum == 0)
		{
			off += Max(len, 0);
			continue;
		}
		if (attnum == SelfItemPointerAttributeNumber)
		{
			/* tid's binary form: block number (4 bytes), offset (2) */
			uint32		block;
			uint16		offset;

			if (len != 6)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("incorrect binary data format for a ctid")));
			memcpy(&block, buf + off, 4);
			memcpy(&offset, buf + off + 4, 2);
			ItemPointerSet(&slot->tts_tid, pg_ntoh32(block), pg_ntoh16(offset));
			off += len;
			continue;
		}
		slot->tts_values[attnum - 1] =
			decode_field(r, &io[attnum - 1], buf + off, len,
						 NameStr(TupleDescAttr(desc, attnum - 1)->attname));
		slot->tts_isnull[attnum - 1] = false;
		off += len;
	}
	ExecStoreVirtualTuple(slot);
}

/*
 * decode_tuple, with receive functions reading text in the server encoding.
 * They convert from the client encoding (pq_getmsgtext), which is the
 * client's business, not the handler's: without this a varchar, name or
 * json column would be decoded differently from a text column, and
 * differently for each client_encoding.
 */
static void
decode_tuple_server_encoding(ShoalBinaryReader *r, const char *buf, TupleTableSlot *slot,
							 ShoalTypeIO *io, int nfields_short, const AttrNumber *short_map,
							 int nfields_long, const AttrNumber *long_map)
{
	int			client_encoding = pg_get_client_encoding();

	if (client_encoding == GetDatabaseEncoding())
	{
		decode_tuple(r, buf, slot, io, nfields_short, short_map, nfields_long, long_map);
		return;
	}
	/* needs no conversion function, so it cannot fail; nor can switching back */
	SetClientEncoding(GetDatabaseEncoding());
	PG_TRY();
	{
		decode_tuple(r, buf, slot, io, nfields_short, short_map, nfields_long, long_map);
	}
	PG_FINALLY();
	{
		SetClientEncoding(client_encoding);
	}
	PG_END_TRY();
}

/*
 * Store the next tuple of the current chunk in slot.  Returns false when
 * the chunk is used up (feed the next one) or the COPY trailer was seen.
 */
bool
shoal_binary_next(ShoalBinaryReader *r, TupleTableSlot *slot, ShoalTypeIO *io,
				  int nfields_short, const AttrNumber *short_map,
				  int nfields_long, const AttrNumber *long_map)
{
	const char *buf;
	Size		avail;
	Size		tuple_len = 0;
	Size		missing;

	if (r->finished || !r->have_view || r->in_header)
		return false;
	buf = (const char *) r->view.buf + r->pos;
	avail = r->view.len - r->pos;

	if (r->carry.len > 0)
	{
		/* complete the tuple begun in an earlier chunk, copying only what it lacks */
		while ((missing = tuple_bytes_missing(r->carry.data, r->carry.len, &tuple_len)) > 0)
		{
			Size		take = Min(missing, avail);

			if (take == 0)
				return false;
			appendBinaryStringInfo(&r->carry, buf, take);
			buf += take;
			avail -= take;
			r->pos += take;
		}
		if (tuple_len == 2 && (int16) pg_ntoh16(*(uint16 *) r->carry.data) == -1)
		{
			r->finished = true;
			resetStringInfo(&r->carry);
			return false;
		}
		decode_tuple_server_encoding(r, r->carry.data, slot, io, nfields_short, short_map,
									 nfields_long, long_map);
		resetStringInfo(&r->carry);
		return true;
	}

	if (avail == 0)
		return false;
	missing = tuple_bytes_missing(buf, avail, &tuple_len);
	if (missing > 0)
	{
		appendBinaryStringInfo(&r->carry, buf, avail);
		r->pos += avail;
		return false;
	}
	if (tuple_len == 2)
	{
		uint16		n16;

		memcpy(&n16, buf, 2);
		if ((int16) pg_ntoh16(n16) == -1)
		{
			r->finished = true;
			r->pos += 2;
			return false;
		}
	}
	decode_tuple_server_encoding(r, buf, slot, io, nfields_short, short_map, nfields_long, long_map);
	r->pos += tuple_len;
	return true;
}
