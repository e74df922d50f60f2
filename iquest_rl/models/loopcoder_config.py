"""Configuration of IQuest's Loop model (`model_type: iquestloopcoder`).

A Llama configuration plus the two loop fields of the released checkpoints
(IQuestLab/IQuest-Coder-V1-40B-Loop-Instruct: hidden 5120, 40 heads / 8 KV heads, 80 layers,
loop_num 2, loop_window_size 64). Importing this module registers the config with `AutoConfig`, so
`AutoConfig.from_pretrained(dir)` and vLLM's config parser (which calls it) understand the model type.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlamaConfig

MODEL_TYPE = "iquestloopcoder"
ARCHITECTURE = "IQuestLoopCoderForCausalLM"


@strict
class IQuestLoopCoderConfig(LlamaConfig):
    """Llama fields + `loop_num` (passes through the layer stack) and `loop_window_size` (tokens).

    head_dim must equal hidden_size // num_attention_heads: vLLM's implementation derives it that way.
    """

    model_type = MODEL_TYPE

    loop_num: int = 2
    """Passes through the shared layer stack; 1 makes the model a plain Llama."""
    loop_window_size: int = 64
    """Tokens each loop-2+ query sees in its own loop's keys (itself included): causal sliding window."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.architectures is None:
            self.architectures = [ARCHITECTURE]

    def validate_architecture(self):
        super().validate_architecture()
        derived = self.hidden_size // self.num_attention_heads
        if self.head_dim != derived:
            raise ValueError(
                f"iquestloopcoder config: head_dim={self.head_dim} but vLLM serves this model with "
                f"hidden_size // num_attention_heads = {derived}; set head_dim to {derived} or leave it unset"
            )
        if self.attention_bias or self.mlp_bias:
            raise ValueError("iquestloopcoder config: attention_bias/mlp_bias must be false (vLLM's layers have none)")
        if self.loop_num < 1:
            raise ValueError(f"iquestloopcoder config: loop_num={self.loop_num} must be >= 1")
        if self.loop_window_size < 1:
            raise ValueError(f"iquestloopcoder config: loop_window_size={self.loop_window_size} must be >= 1")


AutoConfig.register(MODEL_TYPE, IQuestLoopCoderConfig, exist_ok=True)
