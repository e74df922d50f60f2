"""Split `<think>...</think>` reasoning from the answer, in text and in tokens (for metrics and parsing).

Handled shapes: start and end markers; end marker only (templates that put the start marker in the
generation prompt); start marker without an end (truncated: all thinking); no markers (all answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ReasoningSplit:
    thinking: str
    """Text between the markers (markers excluded)."""
    answer: str
    """Text after the end marker, or all text when there is no marker."""
    closed: bool
    """True when the end marker was found; False with a start marker means thinking was cut off."""


def split_reasoning(text: str, think_start: str = "<think>", think_end: str = "</think>") -> ReasoningSplit:
    end = text.find(think_end)
    if end >= 0:
        head = text[:end]
        start = head.find(think_start)
        thinking = head[start + len(think_start):] if start >= 0 else head
        return ReasoningSplit(thinking.strip(), text[end + len(think_end):].lstrip("\n"), True)
    start = text.find(think_start)
    if start >= 0:
        return ReasoningSplit(text[start + len(think_start):].strip(), text[:start].strip(), False)
    return ReasoningSplit("", text, False)


def reasoning_token_counts(token_ids: Sequence[int], tokenizer: Any, think_start: str = "<think>",
                           think_end: str = "</think>") -> tuple[int, int]:
    """(thinking tokens, answer tokens) of one sampled turn; they sum to len(token_ids).

    Thinking runs up to and including the token that completes the end marker, found by binary
    search over decoded prefixes ("prefix contains the marker" is monotone in the prefix length).
    """
    n = len(token_ids)

    def decoded(k: int) -> str:
        return tokenizer.decode(list(token_ids[:k]), skip_special_tokens=False)

    full = decoded(n)
    if think_end not in full:
        return (n, 0) if think_start in full else (0, n)
    lo, hi = 1, n  # smallest k with the marker inside decoded(k)
    while lo < hi:
        mid = (lo + hi) // 2
        if think_end in decoded(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo, n - lo
