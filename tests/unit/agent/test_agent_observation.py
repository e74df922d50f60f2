"""Observation truncation to a token budget: head and tail kept, the cut counted in a marker line."""

from __future__ import annotations

import re

from iquest_rl.agent.observation import truncate_ids, truncate_observation


def test_short_text_unchanged(tokenizer):
    assert truncate_observation("all fine\n", tokenizer, 64) == ("all fine\n", 0)


def test_long_text_keeps_head_and_tail_within_budget(tokenizer):
    lines = [f"line {i}: value={i * 7}" for i in range(300)]
    text = "\n".join(lines)
    n = len(tokenizer.encode(text, add_special_tokens=False))
    out, cut = truncate_observation(text, tokenizer, 100)
    assert cut > 0
    assert out.startswith("line 0: value=0\nline 1")
    assert out.endswith("line 299: value=2093")
    m = re.search(r"\[\.\.\. (\d+) tokens truncated \.\.\.\]", out)
    assert m and int(m.group(1)) == cut
    kept_ids, cut_ids = truncate_ids(tokenizer.encode(text, add_special_tokens=False), 100, tokenizer)
    assert len(kept_ids) <= 100 and cut_ids == cut
    # What was kept plus what was cut is everything except the marker's own tokens.
    marker_len = len(tokenizer.encode(f"\n[... {cut} tokens truncated ...]\n", add_special_tokens=False))
    assert len(kept_ids) - marker_len + cut == n


def test_exact_budget_not_truncated(tokenizer):
    ids = tokenizer.encode("x " * 40, add_special_tokens=False)
    kept, cut = truncate_ids(ids, len(ids), tokenizer)
    assert kept == ids and cut == 0
