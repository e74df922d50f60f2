"""Branch rendering and the assistant-only loss mask, token by token, on the tiny model's template."""

from __future__ import annotations

import pytest

from iquest_rl.data.messages import MessagesRow
from iquest_rl.sft.render import RenderError, branch_messages, render_row


@pytest.fixture(scope="module")
def tok(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def targets(tok, rr) -> str:
    """The text of the masked-in tokens, with '|' between non-contiguous runs."""
    out, prev = [], 0
    for i, m in zip(rr.input_ids, rr.assistant_masks):
        if m and not prev and out:
            out.append("|")
        if m:
            out.append(tok.decode([i]))
        prev = m
    return "".join(out)


THINK_ROW = MessagesRow(messages=[
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "<think>\n2 plus 3 is 5.\n</think>\n\nThe answer is 5."},
], where="x.jsonl:7")


def test_mask_is_exactly_the_assistant_turn_token_by_token(tok):
    rr = render_row(tok, THINK_ROW, "instruct", 512)
    text = tok.apply_chat_template(branch_messages(THINK_ROW.messages, "instruct"), tokenize=False)
    assert rr.input_ids == tok(text, add_special_tokens=False)["input_ids"]  # same ids as inference
    toks = [tok.decode([i]) for i in rr.input_ids]
    first = rr.assistant_masks.index(1)
    # Everything up to "<|im_start|>assistant\n" is prompt; the answer and <|im_end|> are targets.
    assert "".join(toks[:first]).endswith("<|im_start|>assistant\n")
    assert all(m == 0 for m in rr.assistant_masks[:first])
    last = len(rr.assistant_masks) - 1 - rr.assistant_masks[::-1].index(1)
    assert toks[last] == "<|im_end|>"
    assert all(m == 1 for m in rr.assistant_masks[first:last + 1])
    assert all(m == 0 for m in rr.assistant_masks[last + 1:])  # the trailing "\n" is not trained
    assert targets(tok, rr) == "The answer is 5.<|im_end|>"


def test_instruct_drops_think_thinking_keeps_it(tok):
    instruct = render_row(tok, THINK_ROW, "instruct", 512)
    thinking = render_row(tok, THINK_ROW, "thinking", 512)
    assert "<think>" not in tok.decode(instruct.input_ids)
    assert targets(tok, thinking) == "<think>\n2 plus 3 is 5.\n</think>\n\nThe answer is 5.<|im_end|>"
    think_id = tok.convert_tokens_to_ids("<think>")
    k = thinking.input_ids.index(think_id)
    assert thinking.assistant_masks[k] == 1  # the reasoning is a target in the thinking branch


def test_reasoning_content_and_inline_think_render_the_same(tok):
    inline = render_row(tok, THINK_ROW, "thinking", 512)
    msgs = [dict(m) for m in THINK_ROW.messages]
    msgs[2] = {"role": "assistant", "reasoning_content": "2 plus 3 is 5.", "content": "The answer is 5."}
    field = render_row(tok, MessagesRow(messages=msgs), "thinking", 512)
    assert inline.input_ids == field.input_ids and inline.assistant_masks == field.assistant_masks


def test_multi_turn_tool_call_masks_each_assistant_turn_not_the_tool_result(tok):
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6 * 7"}}}
    row = MessagesRow(
        tools=[{"type": "function", "function": {"name": "calculator", "parameters": {}}}],
        messages=[{"role": "user", "content": "Compute 6 * 7."},
                  {"role": "assistant", "content": "", "tool_calls": [call]},
                  {"role": "tool", "content": "42"},
                  {"role": "assistant", "content": "6 * 7 = 42"}])
    rr = render_row(tok, row, "instruct", 1024)
    assert targets(tok, rr) == (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call><|im_end|>'
        "|6 * 7 = 42<|im_end|>")
    assert "42" in tok.decode([i for i, m in zip(rr.input_ids, rr.assistant_masks) if not m])  # tool output


def test_think_only_turn_is_empty_in_instruct_but_valid_in_thinking(tok):
    row = MessagesRow(messages=[{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "<think>just thinking</think>"}])
    with pytest.raises(RenderError, match="empty assistant turn"):
        render_row(tok, row, "instruct", 512)
    assert "just thinking" in targets(tok, render_row(tok, row, "thinking", 512))


def test_over_long_sample_is_an_error_naming_the_lengths(tok):
    with pytest.raises(RenderError, match=r"longer than max_seq_len=16"):
        render_row(tok, THINK_ROW, "thinking", 16)


def test_unbalanced_think_is_an_error(tok):
    row = MessagesRow(messages=[{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "<think>never closed. Answer"}])
    with pytest.raises(RenderError, match="unbalanced"):
        render_row(tok, row, "thinking", 512)
