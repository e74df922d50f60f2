"""Render a messages row for one SFT branch into token ids plus an assistant-only loss mask.

The mask is computed here, not by TRL's `assistant_only_loss`, because that needs `{% generation %}`
markers our chat templates (and IQuest's) lack. The text is the tokenizer's own chat template, so
training ids equal what `apply_chat_template` gives at inference. Assistant spans are found by
rendering prefixes: render(msgs[:i], add_generation_prompt) must be a prefix of render(msgs[:i+1]);
the span between them, up to and including the end-of-turn token, is the target.

Branches: `instruct` removes reasoning (reasoning_content and inline `<think>…</think>`) from every
assistant turn; `thinking` keeps it, moving inline `<think>` blocks into reasoning_content so the
template writes one canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from iquest_rl.data.messages import MessagesRow


class RenderError(ValueError):
    """A row that cannot be rendered for training (empty after the branch transform, too long, ...)."""


@dataclass(frozen=True)
class RenderedRow:
    input_ids: list[int]
    """(T,) token ids of the whole conversation."""
    assistant_masks: list[int]
    """(T,) 1 on assistant target tokens (content, tool calls, end-of-turn), 0 elsewhere."""
    where: str
    """FILE:LINE of the source row."""


def think_pattern(start: str = "<think>", end: str = "</think>") -> re.Pattern:
    return re.compile(re.escape(start) + r"(.*?)" + re.escape(end) + r"\s*", re.DOTALL)


def branch_messages(messages: list[dict[str, Any]], branch: str, start: str = "<think>",
                    end: str = "</think>") -> list[dict[str, Any]]:
    """Copy of messages with assistant reasoning dropped (instruct) or normalised (thinking)."""
    pat = think_pattern(start, end)
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            out.append(dict(m))
            continue
        m = dict(m)
        content = m.get("content") or ""
        inline = [x.strip("\n") for x in pat.findall(content)]
        content = pat.sub("", content)
        if start in content or end in content:
            raise RenderError(f"messages[{i}]: unbalanced {start}/{end} in assistant content")
        if branch == "instruct":
            m.pop("reasoning_content", None)
        else:
            if inline and m.get("reasoning_content"):
                raise RenderError(f"messages[{i}]: both reasoning_content and an inline {start} block")
            if inline:
                m["reasoning_content"] = "\n".join(inline)
        m["content"] = content
        if not content.strip() and not m.get("tool_calls") and not m.get("reasoning_content"):
            raise RenderError(f"messages[{i}]: empty assistant turn after dropping {start} content "
                              f"({branch} branch)")
        out.append(m)
    return out


def assistant_spans(tokenizer, messages: list[dict[str, Any]], tools: list | None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant target."""
    eos = tokenizer.eos_token

    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tools=tools or None, tokenize=False,
                                             add_generation_prompt=gen)

    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise RenderError(
                f"messages[{i}]: the chat template does not render conversations prefix-consistently "
                "(e.g. it drops earlier <think> blocks); cannot locate the assistant target")
        stop = upto.rfind(eos, len(prompt)) if eos else -1
        spans.append((len(prompt), stop + len(eos) if stop >= 0 else len(upto)))
    return full, spans


def render_row(tokenizer, row: MessagesRow, branch: str, max_seq_len: int, think: tuple[str, str] = ("<think>", "</think>")) -> RenderedRow:
    """Token ids and assistant mask for one row; raises RenderError naming what is wrong."""
    msgs = branch_messages(row.messages, branch, *think)
    text, spans = assistant_spans(tokenizer, msgs, row.tools)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in offsets]
    if len(ids) > max_seq_len:
        raise RenderError(f"sample is {len(ids)} tokens, longer than max_seq_len={max_seq_len}")
    if not any(mask):
        raise RenderError("no assistant target tokens after rendering")
    return RenderedRow(list(ids), mask, row.where)
