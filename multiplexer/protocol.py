"""The multiplexer's wire format, independent of any socket.

Every frame on every socket is a msgpack array of messages, so that whatever is pending for one
destination travels in one frame (one syscall per peer per loop turn).  A message is a 6-array::

    [kind, node, client, req, xact, payload]

``node`` is the destination node on the way out (backend -> its multiplexer) and the origin node
on the way back; ``client`` is the originating backend's routing id (filled in by its
multiplexer, or by the backend itself when it writes into a lent channel: direct.py); ``req``
numbers the backend's requests; ``xact`` names a distributed transaction whose
jobs stick to one worker; ``payload`` is opaque to multiplexers: a job, binary tuple data, an
error.  Multiplexers read only the first five fields and pass payloads through untouched.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack


class Kind:
    """The kinds of message, as plain ints: every hop compares them for every message, and an
    enum's member lookup costs three times a class attribute's."""

    QUERY = 1  # backend -> worker: payload is a job (see encode_job)
    DATA = 2  # worker -> backend: payload is binary COPY tuple data
    DONE = 3  # worker -> backend: payload is [command tag, rows]
    ERROR = 4  # worker or multiplexer -> backend: payload is [sqlstate, message, detail, hint]
    ACK = 5  # backend -> worker: payload is the number of DATA chunks consumed (flow credit)
    CANCEL = 6  # backend -> worker: stop the request
    PING = 7  # backend -> a node's multiplexer, answered by that multiplexer itself
    PONG = 8
    HELLO = 9  # worker -> its multiplexer: req is the worker's pid
    HEARTBEAT = 10  # multiplexer -> multiplexer, payload is the sender's node name
    STATS = 11  # backend -> its own multiplexer; the answer's payload is JSON text
    CONTROL = 12  # like QUERY, for a job that takes no row locks (COMMIT PREPARED, resolving):
    #               served first, and one worker is kept for it, so it never waits behind
    #               transactions that wait for it
    CHANNEL = 13  # backend -> its multiplexer: may I write to node's channel myself?  The answer's
    #               payload is [epoch, this node's name] with the channel's socket attached, or nil
    CHANNEL_DOWN = 14  # multiplexer -> backends: node's channel of epoch (payload) is gone
    PING_RUN = 15  # backend -> its multiplexer: exchange payload [count, window] pings with node's
    #               multiplexer, window of them in flight; the answer's payload is the run's
    #               [pings, seconds, p50_us, p99_us, max_us]


KINDS = frozenset(value for name, value in vars(Kind).items() if name.isupper())

# Flow control: a worker may have this many DATA chunks unacknowledged per request.
INITIAL_CREDIT = 16
CHUNK_BYTES = 64 * 1024

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


class ProtocolError(ValueError):
    """A frame that is not a valid batch of messages."""


def pack(messages: list[list[Any]]) -> bytes:
    """One frame for a batch of messages."""
    return _packer.pack(messages)


def unpack(frame: bytes) -> list[list[Any]]:
    """The messages of a frame; ProtocolError if it is not a well-formed batch.

    A frame comes from a peer or a local process: never trust it further than this check.
    """
    try:
        messages = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if type(messages) is not list:
        raise ProtocolError("a frame must be an array of messages")
    # exact types (msgpack makes no subclasses): the check runs for every message that passes
    for message in messages:
        if (
            type(message) is not list
            or len(message) != 6
            or type(message[0]) is not int
            or message[0] not in KINDS
            or type(message[1]) is not str
            or type(message[2]) is not bytes
            or type(message[3]) is not int
            or (message[4] is not None and type(message[4]) is not str)
        ):
            raise ProtocolError("a message must be [kind, node, client, req, xact, payload]")
    return messages


def message(kind: int, node: str = "", client: bytes = b"", req: int = 0, xact: str | None = None,
            payload: Any = b"") -> list[Any]:
    return [int(kind), node, client, req, xact, payload]


# -- payloads (only the two ends read these) --------------------------------------------------------

def encode_job(op: str, **fields: Any) -> bytes:
    """A job for a worker: ``op`` is execute, begin, commit, rollback, savepoint, release,
    rollback_to, prepare, commit_prepared, rollback_prepared or resolve; the other fields are its
    arguments."""
    fields["op"] = op
    return msgpack.packb(fields, use_bin_type=True)


def decode_job(payload: bytes) -> dict[str, Any]:
    job = msgpack.unpackb(payload, raw=False)
    if not isinstance(job, dict) or not isinstance(job.get("op"), str):
        raise ProtocolError("a job must be a map with an op")
    return job


def encode_error(sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> bytes:
    return msgpack.packb([sqlstate, message, detail, hint], use_bin_type=True)


def decode_error(payload: bytes) -> tuple[str, str, str | None, str | None]:
    try:
        sqlstate, text, detail, hint = msgpack.unpackb(payload, raw=False)
    except Exception:
        return "XX000", "malformed error from the multiplexer", None, None
    return sqlstate, text, detail, hint


def encode_done(tag: str, rows: int) -> bytes:
    return msgpack.packb([tag, rows], use_bin_type=True)


def decode_done(payload: bytes) -> tuple[str, int]:
    tag, rows = msgpack.unpackb(payload, raw=False)
    return tag, rows


def encode_text_tuples(rows: list[tuple[str | None, ...]]) -> bytes:
    """Binary tuple data of rows whose columns are all text (answers made by Python code)."""
    out = bytearray()
    for row in rows:
        out += struct.pack("!h", len(row))
        for value in row:
            if value is None:
                out += struct.pack("!i", -1)
            else:
                data = value.encode()
                out += struct.pack("!i", len(data)) + data
    return bytes(out)


def decode_text_tuples(data: bytes) -> list[tuple[str | None, ...]]:
    """Rows of binary tuple data whose columns are all text (catalog reads)."""
    rows = []
    pos = 0
    while pos < len(data):
        (count,) = struct.unpack_from("!h", data, pos)
        pos += 2
        row = []
        for _ in range(count):
            (length,) = struct.unpack_from("!i", data, pos)
            pos += 4
            if length < 0:
                row.append(None)
            else:
                row.append(data[pos:pos + length].decode())
                pos += length
        rows.append(tuple(row))
    return rows
