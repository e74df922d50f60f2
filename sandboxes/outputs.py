"""Output capping: keep the head and the tail of a stream, drop the middle, and say so.

A runaway command (`yes`, a test printing megabytes) must not exhaust the harness's memory or a
model's context, so every backend feeds its streams through `CappedBuffer` while reading them.
"""

from __future__ import annotations

MARKER = "\n[... iquest-rl: {n} bytes of output truncated ...]\n"
"""Inserted where the middle of a stream was dropped; {n} = number of bytes dropped."""


class CappedBuffer:
    """Accumulates a byte stream in O(limit) memory, keeping the first and last bytes.

    `limit` bytes are kept in all: the first `limit // 2` (head) and the last `limit - limit // 2`
    (tail). Feeding N bytes costs O(N) time but never more than O(limit) memory.
    """

    def __init__(self, limit: int):
        if limit < 2:
            raise ValueError(f"output limit must be >= 2 bytes, got {limit}")
        self.limit = limit
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        """Bytes fed so far (kept or not)."""

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self.tail_limit:
            self._tail = bytearray(data[-self.tail_limit:])
            return
        self._tail += data
        excess = len(self._tail) - self.tail_limit
        if excess > 0:
            # Amortised: trim only once the tail is twice its size would be cheaper, but the tail
            # is small (<= limit/2) and del of a bytearray prefix is a memmove.
            del self._tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    @property
    def dropped(self) -> int:
        return max(0, self.total - len(self._head) - len(self._tail))

    def getvalue(self) -> bytes:
        """Head + marker + tail when truncated, else everything fed."""
        if not self.truncated:
            return bytes(self._head + self._tail)
        marker = MARKER.format(n=self.dropped).encode()
        return bytes(self._head) + marker + bytes(self._tail)

    def text(self) -> str:
        """getvalue() decoded as UTF-8; bytes cut mid-character become U+FFFD."""
        return self.getvalue().decode("utf-8", errors="replace")


def cap_output(data: bytes, limit: int) -> tuple[str, bool]:
    """Cap one whole stream: (text with head+tail kept and a marker, truncated?)."""
    buf = CappedBuffer(limit)
    buf.feed(data)
    return buf.text(), buf.truncated
