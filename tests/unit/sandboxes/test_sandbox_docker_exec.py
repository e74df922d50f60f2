"""The exec stream reader on a real socket pair (no engine): frames split anywhere demultiplex
correctly, output is capped while read, and the deadline stops a stream that never ends."""

from __future__ import annotations

import socket
import struct
import threading
import time

from sandboxes.docker_exec import _pump, wrapped_argv
from sandboxes.outputs import CappedBuffer


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def _send(sock: socket.socket, data: bytes, step: int, close: bool = True) -> threading.Thread:
    def run():
        for i in range(0, len(data), step):
            sock.sendall(data[i:i + step])
        if close:
            sock.close()
    t = threading.Thread(target=run)
    t.start()
    return t


def test_frames_split_at_any_byte_are_demultiplexed():
    payload = b"".join(frame(1 + i % 2, f"line {i}\n".encode()) for i in range(300))
    for step in (1, 3, 8, 9, 1000):
        a, b = socket.socketpair()
        out, err = CappedBuffer(1 << 20), CappedBuffer(1 << 20)
        t = _send(b, payload, step)
        assert _pump(a, out, err, time.monotonic() + 10) is True
        t.join()
        a.close()
        assert out.getvalue() == b"".join(f"line {i}\n".encode() for i in range(0, 300, 2))
        assert err.getvalue() == b"".join(f"line {i}\n".encode() for i in range(1, 300, 2))


def test_output_is_capped_while_streaming():
    a, b = socket.socketpair()
    big = frame(1, b"x" * 100_000 + b"END")
    out, err = CappedBuffer(1000), CappedBuffer(1000)
    t = _send(b, big * 20, 65536)
    assert _pump(a, out, err, time.monotonic() + 10)
    t.join()
    a.close()
    assert out.truncated and out.total == 20 * 100_003 and out.getvalue().endswith(b"END")


def test_deadline_stops_a_stream_that_stays_open():
    a, b = socket.socketpair()
    out, err = CappedBuffer(1000), CappedBuffer(1000)
    b.sendall(frame(1, b"partial"))
    t0 = time.monotonic()
    assert _pump(a, out, err, t0 + 0.3) is False
    assert 0.25 < time.monotonic() - t0 < 2 and out.getvalue() == b"partial"
    a.close(), b.close()


def test_timeout_argument_is_never_zero():
    # coreutils `timeout 0` means "no limit": a tiny timeout must stay a limit.
    assert wrapped_argv("true", 0.0)[3] == "0.001" and wrapped_argv("x", 2.5)[3:] == ["2.500", "x"]
