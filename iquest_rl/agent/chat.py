"""Token ids from the chat template, rendered once for the prompt and as deltas afterwards.

The conversation is never re-rendered: after a sampled turn we only tokenize the template's
suffix for the tool message(s) plus the next assistant generation prompt. That suffix is read
off the template itself by rendering a two-message stand-in conversation with and without the
tool messages, so it follows whatever ChatML variant the tokenizer ships.
"""

from __future__ import annotations

from typing import Any

_SENTINEL = "\u2063ASSISTANT-TURN\u2063"
"""Stand-in assistant content; the text after it up to the tool messages closes an assistant turn."""


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> tuple[str, list[int]]:
    """Opening messages -> (text, ids) ending with the assistant generation prompt."""
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    # The template already wrote any BOS/control tokens; adding them again would double them.
    return text, tokenizer.encode(text, add_special_tokens=False)


class ToolTurnRenderer:
    """Builds the non-sampled ids between two sampled turns: end of the assistant turn, the tool
    messages, and the next generation prompt."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        base = self._base = self._render([], add_generation_prompt=False)
        self.closing = base[base.rindex(_SENTINEL) + len(_SENTINEL):]
        """Template text that ends an assistant turn, e.g. "<|im_end|>\\n"."""
        closing_ids = tokenizer.encode(self.closing, add_special_tokens=False)
        self.end_id = closing_ids[0] if closing_ids else None
        """The end-of-turn token; when the model sampled it, it is not added again."""
        self.end_text = tokenizer.decode([self.end_id], skip_special_tokens=False) if closing_ids else ""
        """Text of the end-of-turn token ("<|im_end|>"); stripped from sampled text before parsing."""

    def _render(self, tool_messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        stand_in = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _SENTINEL}]
        return self.tokenizer.apply_chat_template(
            stand_in + tool_messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    def delta_text(self, sampled_ids: list[int], tool_messages: list[dict[str, Any]]) -> str:
        """Text to append after `sampled_ids` so that the next turn starts from a proper prompt."""
        base = self._base
        full = self._render(tool_messages, add_generation_prompt=True)
        if not full.startswith(base):
            raise ValueError("chat template: rendering tool messages changed the earlier turns, so the "
                             "observation cannot be appended as a suffix; use a template that renders "
                             "messages independently")
        closing = self.closing
        if sampled_ids and sampled_ids[-1] == self.end_id and closing.startswith(self.end_text):
            closing = closing[len(self.end_text):]
        return closing + full[len(base):]

    def delta_ids(self, sampled_ids: list[int], tool_messages: list[dict[str, Any]]) -> tuple[str, list[int]]:
        text = self.delta_text(sampled_ids, tool_messages)
        return text, self.tokenizer.encode(text, add_special_tokens=False)
