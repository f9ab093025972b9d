"""multiplexer.peerlink: the handshake between two multiplexers, over a local socket pair."""

from __future__ import annotations

import socket

import pytest

from shoal.multiplexer.peerlink import HandshakeError, PeerLink

KEY = b"k" * 64


def pair(connector_key: bytes = KEY, acceptor_key: bytes = KEY, caller: str = "n1",
         expected: str = "n2") -> tuple[PeerLink, PeerLink]:
    a, b = socket.socketpair()
    calling = PeerLink(a, caller, connector_key, connector=True, expected=expected)
    accepting = PeerLink(b, "n2", acceptor_key, connector=False)
    return calling, accepting


def exchange(calling: PeerLink, accepting: PeerLink) -> None:
    calling.writable()  # the connect has finished: HELLO goes out
    for _ in range(3):
        accepting.read()
        calling.read()


def test_members_prove_themselves_to_each_other() -> None:
    calling, accepting = pair()
    exchange(calling, accepting)
    assert calling.up and accepting.up and accepting.peer == "n1"
    calling.send(b"frame one")
    assert accepting.read() == [b"frame one"]
    accepting.send(b"frame two")
    assert calling.read() == [b"frame two"]


def test_an_acceptor_without_the_key_is_not_trusted() -> None:
    calling, accepting = pair(acceptor_key=b"z" * 64)
    with pytest.raises(HandshakeError, match="could not prove the cluster key"):
        exchange(calling, accepting)
    assert not calling.up


def test_a_caller_without_the_key_is_refused() -> None:
    calling, accepting = pair(connector_key=b"z" * 64)
    calling.writable()
    accepting.read()
    with pytest.raises(HandshakeError):
        calling.read()  # the caller already sees that the acceptor's proof does not match
    calling2, accepting2 = pair(connector_key=b"z" * 64)
    # a caller that ignores the mismatch and answers anyway is refused by the acceptor
    calling2.writable()
    accepting2.read()
    calling2._their_nonce = b""
    with pytest.raises(HandshakeError):
        calling2.read()
    assert not accepting2.up


def test_the_wrong_node_at_an_address_is_refused() -> None:
    calling, accepting = pair(expected="n3")
    with pytest.raises(HandshakeError, match="not 'n3'"):
        exchange(calling, accepting)


def test_garbage_is_not_a_handshake() -> None:
    a, b = socket.socketpair()
    accepting = PeerLink(b, "n2", KEY, connector=False)
    a.sendall(b"\x00\x00\x00\x03abc")
    with pytest.raises(HandshakeError):
        accepting.read()
