"""multiplexer.protocol, peers and stats without a server: framing, hostile input, addresses."""

from __future__ import annotations

import os
import struct

import msgpack
import pytest

from shoal.multiplexer import protocol
from shoal.multiplexer.peers import node_address
from shoal.multiplexer.protocol import Kind, ProtocolError
from shoal.multiplexer.stats import PeerStats, Snapshot


def test_a_batch_round_trips() -> None:
    batch = [
        protocol.message(Kind.QUERY, "n2", b"\x00\x00\x01\x02", 7, "n1:abc", protocol.encode_job("begin")),
        protocol.message(Kind.DATA, "n1", b"\x00\x00\x01\x02", 7, None, b"\x00\x01" * 1000),
    ]
    assert protocol.unpack(protocol.pack(batch)) == batch


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # never used in msgpack
        msgpack.packb({"not": "a list"}),
        msgpack.packb([[1, 2, 3]]),
        msgpack.packb([[99, "n1", b"", 1, None, b""]]),  # unknown kind
        msgpack.packb([[1, b"n1", b"", 1, None, b""]]),  # node must be text
        msgpack.packb([[1, "n1", "client", 1, None, b""]]),  # client must be bytes
        msgpack.packb([[1, "n1", b"", "1", None, b""]]),  # req must be an int
        msgpack.packb([[1, "n1", b"", 1, 5, b""]]),  # xact must be text or nil
        msgpack.packb([[[1], "n1", b"", 1, None, b""]]),  # a kind that cannot be looked up
        msgpack.packb([[{"k": 1}, "n1", b"", 1, None, b""]]),
        msgpack.packb([[1, "n1", b"", True, None, b""]]),  # req must be an int, not a boolean
    ],
)
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.unpack(frame)


def test_random_bytes_never_escape_as_another_exception() -> None:
    for _ in range(2000):
        frame = os.urandom(int.from_bytes(os.urandom(1), "big"))
        try:
            protocol.unpack(frame)
        except ProtocolError:
            pass


def test_jobs_errors_and_results() -> None:
    job = protocol.decode_job(protocol.encode_job("execute", sql="SELECT 1", params=[None, "x"]))
    assert job == {"op": "execute", "sql": "SELECT 1", "params": [None, "x"]}
    with pytest.raises(ProtocolError):
        protocol.decode_job(msgpack.packb(["execute"]))
    assert protocol.decode_error(protocol.encode_error("23505", "dup", "Key (id)=(1)", None)) == (
        "23505", "dup", "Key (id)=(1)", None)
    assert protocol.decode_error(b"\xc1")[0] == "XX000"
    assert protocol.decode_done(protocol.encode_done("INSERT 0 3", 3)) == ("INSERT 0 3", 3)


def test_text_tuples() -> None:
    def field(value: str | None) -> bytes:
        if value is None:
            return struct.pack("!i", -1)
        return struct.pack("!i", len(value.encode())) + value.encode()

    data = struct.pack("!h", 2) + field("n1") + field(None) + struct.pack("!h", 2) + field("é") + field("")
    assert protocol.decode_text_tuples(data) == [("n1", None), ("é", "")]
    assert protocol.encode_text_tuples([("n1", None), ("é", "")]) == data
    assert protocol.encode_text_tuples([]) == b""


def test_node_addresses() -> None:
    assert node_address("n2", "host=127.0.0.1 port=5441 dbname=postgres", "").endpoint == "127.0.0.1:6441"
    assert node_address("n2", "host=10.0.0.2 port=5441", "7000").endpoint == "10.0.0.2:7000"
    assert node_address("n3", "host=/tmp port=5500", None).endpoint == "127.0.0.1:6500"


def test_stats_rows_and_prometheus() -> None:
    up = PeerStats(msgs_in=3, msgs_out=4, bytes_in=30, bytes_out=40)
    up.latencies.extend([100.0, 200.0, 300.0, 400.0])
    snap = Snapshot("n1", {"n2": ("up", up), "n3": ("down", PeerStats())}, 1, 2, 1, 4, 0)
    rows = snap.rows()
    assert [r["peer"] for r in rows] == ["n2", "n3", "total"]
    assert rows[0]["latency_p50_us"] == 300.0 and rows[1]["latency_p50_us"] is None
    assert rows[-1]["msgs_in"] == 3
    text = snap.to_prometheus()
    assert 'shoal_mux_msgs_in_total{node="n1",peer="n2"} 3' in text
    assert 'shoal_mux_peer_up{node="n1",peer="n3"} 0' in text
    assert "# TYPE shoal_mux_workers gauge" in text
