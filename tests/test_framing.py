"""Length-prefixed frames (multiplexer/framing.py): split anywhere on the way in, sent whole on
the way out however full the socket is."""

from __future__ import annotations

import os
import random
import socket
import threading

import pytest

from shoal.multiplexer import framing


def _frames(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [os.urandom(rng.choice([0, 1, 3, 4, 5, 100, 70_000, 300_000])) for _ in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_frames_cut_at_random_places_come_out_whole_and_in_order(seed: int) -> None:
    frames = _frames(40, seed)
    stream = b"".join(framing.encode(f) for f in frames)
    rng = random.Random(seed)
    reader = framing.FrameReader()
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 5, 4096, 65_536, 400_000])
        got.extend(bytes(f) for f in reader.feed(stream[pos:pos + step]))
        pos += step
    assert got == frames
    assert not reader.pending


def test_a_frame_larger_than_the_limit_is_refused_before_it_arrives() -> None:
    reader = framing.FrameReader()
    with pytest.raises(framing.FrameError):
        reader.feed((framing.MAX_FRAME + 1).to_bytes(4, "big") + b"x")


def test_frames_that_arrive_whole_are_not_copied() -> None:
    data = framing.encode(b"abc") + framing.encode(b"defg")
    frames = framing.FrameReader().feed(data)
    assert [bytes(f) for f in frames] == [b"abc", b"defg"]
    assert all(f.obj is data for f in frames)


def test_writes_into_a_full_socket_are_queued_and_leave_whole_in_order() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = framing.FramedSocket(left)
    frames = _frames(30, 7)
    done = [writer.write(f) for f in frames]
    assert not all(done), "the socket should have filled up"
    right.setblocking(False)
    reader = framing.FrameReader()
    got: list[bytes] = []
    while len(got) < len(frames):
        writer.flush()
        try:
            got.extend(bytes(f) for f in reader.feed(right.recv(1 << 20)))
        except BlockingIOError:
            pass
    assert got == frames
    assert writer.flush()
    left.close()
    right.close()


def test_send_blocking_sends_header_and_frame_as_one_frame() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    payload = os.urandom(200_000)
    sender = threading.Thread(target=framing.send_blocking, args=(left, payload))
    sender.start()
    reader = framing.FrameReader()
    got: list[bytes] = []
    while not got:
        got.extend(bytes(f) for f in reader.feed(right.recv(65_536)))
    sender.join()
    assert got == [payload]
    left.close()
    right.close()
