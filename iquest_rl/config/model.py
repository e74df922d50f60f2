"""Which policy model to load and how its text is structured (chat, thinking, tool calls)."""

from __future__ import annotations

from typing import Literal

from .base import StrictModel


class ModelConfig(StrictModel):
    path: str = "tiny:llama-tiny"
    """Hugging Face id or local directory; `tiny:<arch>-<size>` makes (once, cached) a local tiny model."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; auto = bfloat16 on GPU, float32 on CPU."""
    trust_remote_code: bool = False
    """Allow custom modelling code shipped with the checkpoint."""
    tool_call_format: Literal["hermes", "qwen3_coder"] = "hermes"
    """How the model writes tool calls: hermes JSON in <tool_call>, or qwen3_coder <function=...> XML."""
    think_start: str = "<think>"
    """Marker opening the reasoning block."""
    think_end: str = "</think>"
    """Marker closing the reasoning block."""
    chat_template: str | None = None
    """Path to a Jinja chat template overriding the tokenizer's; None keeps the tokenizer's."""
