"""Tool-call formats by name (ModelConfig.tool_call_format): a parser and its inverse renderer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .calls import ParseError, ToolCall
from .hermes import parse_hermes, render_hermes
from .qwen3_coder import parse_qwen3_coder, render_qwen3_coder

ParseFn = Callable[[str, "list[dict[str, Any]] | None"], "tuple[str, list[ToolCall], list[ParseError]]"]


@dataclass(frozen=True)
class ToolCallFormat:
    name: str
    parse: ParseFn
    """(text, tool schemas or None) -> (content, calls, errors); never raises on model output."""
    render: Callable[[ToolCall], str]
    """ToolCall -> the text a model writes for it (scripted policies, SFT data)."""


FORMATS: dict[str, ToolCallFormat] = {
    "hermes": ToolCallFormat("hermes", parse_hermes, render_hermes),
    "qwen3_coder": ToolCallFormat("qwen3_coder", parse_qwen3_coder, render_qwen3_coder),
}


def get_format(name: str) -> ToolCallFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown tool_call_format {name!r}; choose from {sorted(FORMATS)}") from None
