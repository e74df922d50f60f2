"""Output capping: head and tail kept, a marker in between, memory bounded, chunking irrelevant."""

from __future__ import annotations

import pytest

from sandboxes.outputs import MARKER, CappedBuffer, cap_output


def test_under_limit_is_kept_whole():
    text, truncated = cap_output(b"hello\nworld\n", 64)
    assert (text, truncated) == ("hello\nworld\n", False)


def test_exactly_at_limit_is_not_truncated():
    data = bytes(range(256)) * 4
    buf = CappedBuffer(len(data))
    buf.feed(data)
    assert not buf.truncated and buf.getvalue() == data


def test_over_limit_keeps_head_and_tail_with_marker():
    data = b"".join(b"%d\n" % i for i in range(100000))
    text, truncated = cap_output(data, 1000)
    assert truncated
    head, sep, rest = text.partition("\n[... iquest-rl: ")
    assert sep, "marker missing"
    assert head == data[:500].decode()
    assert text.endswith(data[-500:].decode())
    dropped = len(data) - 1000
    assert MARKER.format(n=dropped) in text


@pytest.mark.parametrize("chunk", [1, 7, 499, 500, 501, 4096, 10**6])
def test_chunking_does_not_change_the_result(chunk):
    data = bytes((i * 31 + 7) % 251 for i in range(20000))
    whole = CappedBuffer(1001)
    whole.feed(data)
    pieces = CappedBuffer(1001)
    for i in range(0, len(data), chunk):
        pieces.feed(data[i:i + chunk])
    assert pieces.getvalue() == whole.getvalue()
    assert pieces.total == len(data) and pieces.dropped == len(data) - 1001
    assert pieces.getvalue().startswith(data[:500]) and pieces.getvalue().endswith(data[-501:])


def test_memory_stays_bounded_while_feeding():
    buf = CappedBuffer(2048)
    block = b"x" * 65536
    for _ in range(200):  # 13 MB through a 2 KiB buffer
        buf.feed(block)
        assert len(buf._head) + len(buf._tail) <= 2048
    assert buf.total == 200 * 65536 and buf.truncated


def test_cut_multibyte_characters_decode_with_replacement():
    data = "é".encode() * 1000  # 2 bytes each; an odd head size cuts one in half
    text, truncated = cap_output(data, 101)
    assert truncated and "\ufffd" in text
    assert text.startswith("é" * 25)


def test_rejects_tiny_limit():
    with pytest.raises(ValueError, match="output limit"):
        CappedBuffer(1)
