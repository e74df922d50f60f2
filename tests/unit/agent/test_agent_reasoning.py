"""Splitting <think> reasoning from the answer, in text and in tokens."""

from __future__ import annotations

import pytest

from iquest_rl.agent.reasoning import reasoning_token_counts, split_reasoning


@pytest.mark.parametrize("text, thinking, answer, closed", [
    ("<think>\nplan the fix\n</think>\n\nDone.", "plan the fix", "Done.", True),
    ("plan only, start marker was in the prompt\n</think>\nDone.", "plan only, start marker was in the prompt",
     "Done.", True),
    ("<think>\nstill thinking when the budget ran out", "still thinking when the budget ran out", "", False),
    ("Just an answer.", "", "Just an answer.", False),
    ("<think></think>Answer", "", "Answer", True),
])
def test_split_reasoning(text, thinking, answer, closed):
    s = split_reasoning(text)
    assert (s.thinking, s.answer, s.closed) == (thinking, answer, closed)


def test_custom_markers():
    s = split_reasoning("[R]why[/R]what", "[R]", "[/R]")
    assert (s.thinking, s.answer, s.closed) == ("why", "what", True)


def test_token_counts_split_at_end_marker(tokenizer):
    thinking_part = tokenizer.encode("<think>\nlet me look at the code\n</think>", add_special_tokens=False)
    answer_part = tokenizer.encode("\n\nThe bug is in add.<|im_end|>", add_special_tokens=False)
    ids = thinking_part + answer_part
    assert reasoning_token_counts(ids, tokenizer) == (len(thinking_part), len(answer_part))


def test_token_counts_unclosed_and_absent(tokenizer):
    ids = tokenizer.encode("<think>\nnever finished", add_special_tokens=False)
    assert reasoning_token_counts(ids, tokenizer) == (len(ids), 0)
    ids = tokenizer.encode("no reasoning here", add_special_tokens=False)
    assert reasoning_token_counts(ids, tokenizer) == (0, len(ids))
    assert reasoning_token_counts([], tokenizer) == (0, 0)


def test_token_counts_multi_token_marker(tokenizer):
    # A marker that is not one token (custom config) is found through decoded prefixes.
    head = tokenizer.encode("reason [[END]]", add_special_tokens=False)
    tail = tokenizer.encode(" answer", add_special_tokens=False)
    assert len(tokenizer.encode("[[END]]", add_special_tokens=False)) > 1
    assert reasoning_token_counts(head + tail, tokenizer, "[[START]]", "[[END]]") == (len(head), len(tail))
