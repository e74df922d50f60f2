"""Cut tool output to a token budget, keeping head and tail around a marker line that says how much went."""

from __future__ import annotations

from typing import Any


def marker_text(cut: int) -> str:
    return f"\n[... {cut} tokens truncated ...]\n"


def truncate_ids(ids: list[int], max_tokens: int, tokenizer: Any) -> tuple[list[int], int]:
    """(n,) ids -> (<= max_tokens ids, tokens cut). Head and tail share the budget left by the marker."""
    if len(ids) <= max_tokens:
        return list(ids), 0
    cut = len(ids) - max_tokens
    # The marker's length depends on the digits of `cut`; two rounds settle it.
    for _ in range(2):
        marker = tokenizer.encode(marker_text(cut), add_special_tokens=False)
        keep = max(max_tokens - len(marker), 2)
        cut = len(ids) - keep
    head = keep - keep // 2
    tail = keep // 2
    return list(ids[:head]) + marker + list(ids[len(ids) - tail:]), cut


def truncate_observation(text: str, tokenizer: Any, max_tokens: int) -> tuple[str, int]:
    """text -> (text of at most ~max_tokens tokens, tokens cut; 0 when nothing was cut).

    The result is decoded back to text because it goes into a chat-template tool message; the
    count can move by a token or two when the template re-tokenizes it in context.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    kept, cut = truncate_ids(ids, max_tokens, tokenizer)
    if not cut:
        return text, 0
    return tokenizer.decode(kept, skip_special_tokens=False), cut
