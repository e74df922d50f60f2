"""The DeepSpeed config dict for `iquest-rl sft`, generated from SFTConfig (users never write DS JSON).

"auto" values are filled by transformers' DeepSpeed integration from TrainingArguments, so batch
size, accumulation, LR and clipping have one source of truth. The optimizer is DeepSpeed's AdamW
with `torch_adam: true`: the fused/CPU-Adam ops are not built (DS_BUILD_OPS=0).
"""

from __future__ import annotations

from typing import Any


def deepspeed_config(zero_stage: int, bf16: bool) -> dict[str, Any]:
    """ZeRO config for TrainingArguments(deepspeed=...); stage 3 gathers full weights on save."""
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_bucket_size="auto")
    if zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            # Full (unpartitioned) weights in save_model, so <run_dir>/final is a plain HF checkpoint.
            stage3_gather_16bit_weights_on_model_save=True,
        )
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "optimizer": {"type": "AdamW", "params": {
            "lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto", "torch_adam": True}},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
