"""The DeepSpeed config dict, generated from the typed LearnerConfig (users never hand-write DeepSpeed JSON).

Pure: no torch or deepspeed import. `deepspeed_config` is what every learner rank passes to
`deepspeed.initialize` (and to `HfDeepSpeedConfig`, so ZeRO-3 partitions the weights while loading).
"""

from __future__ import annotations

from typing import Any

from iquest_rl.config.learner import LearnerConfig


def resolve_dtype(learner: LearnerConfig, on_gpu: bool) -> str:
    """learner.dtype with "auto" resolved: bfloat16 on GPU, float32 on CPU."""
    if learner.dtype == "auto":
        return "bfloat16" if on_gpu else "float32"
    if learner.dtype == "bfloat16" and not on_gpu:
        # DeepSpeed's CPU accelerator runs ZeRO-3 in fp32 only (ENVIRONMENT.md).
        raise ValueError("learner.dtype=bfloat16 needs a GPU; use float32 (or auto) on the CPU")
    return learner.dtype


def resolve_backend(learner: LearnerConfig, on_gpu: bool) -> str:
    """learner.backend with "auto" resolved: nccl on GPU, gloo on CPU."""
    if learner.backend == "auto":
        return "nccl" if on_gpu else "gloo"
    if learner.backend == "nccl" and not on_gpu:
        raise ValueError("learner.backend=nccl needs a GPU; use gloo (or auto) on the CPU")
    return learner.backend


def deepspeed_config(
    learner: LearnerConfig,
    world_size: int,
    on_gpu: bool,
    hidden_size: int | None = None,
    lr: float | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for one engine (policy or critic).

    world_size: ranks in the data-parallel group. hidden_size: the model's, for ZeRO-3 bucket sizes the
    way HF's "auto" values derive them (None keeps DeepSpeed's defaults). lr overrides learner.lr (the
    critic uses algo.critic_lr). train_micro_batch_size_per_gpu is nominal when micro-batches are cut by
    a token budget: the learner hands DeepSpeed whatever micro-batch it built.
    """
    dtype = resolve_dtype(learner, on_gpu)
    lr = learner.lr if lr is None else lr
    zero: dict[str, Any] = {"stage": learner.zero_stage, "contiguous_gradients": True, "overlap_comm": on_gpu}
    if learner.zero_stage == 3 and hidden_size:
        zero.update(
            reduce_bucket_size=hidden_size * hidden_size,
            stage3_prefetch_bucket_size=int(0.9 * hidden_size * hidden_size),
            # Tensors smaller than this stay whole on every rank (norms); matrices are partitioned.
            stage3_param_persistence_threshold=10 * hidden_size,
        )
    if learner.zero_stage == 3:
        # save_checkpoint also writes the gathered 16-bit weights only when asked; we export our own.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if on_gpu and learner.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if on_gpu and learner.offload_params:
        if learner.zero_stage != 3:
            raise ValueError("learner.offload_params needs learner.zero_stage=3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}

    adam: dict[str, Any] = {
        "lr": lr,
        "betas": list(learner.betas),
        "eps": learner.eps,
        "weight_decay": learner.weight_decay,
    }
    if not (on_gpu and learner.offload_optimizer):
        # torch's AdamW. ZeRO hands the optimiser one flat fp32 partition per parameter group, so a
        # multi-tensor fused kernel gains little, and DeepSpeed's FusedAdam would be JIT-compiled on
        # every node's first start (a CUDA toolchain and Python headers needed there). With optimiser
        # offload DeepSpeed's own CPU Adam is kept: torch's would be far slower on the CPU partition.
        adam["torch_adam"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": learner.micro_batch_size,
        "gradient_accumulation_steps": learner.grad_accum,
        "train_batch_size": learner.micro_batch_size * learner.grad_accum * world_size,
        "gradient_clipping": float(learner.grad_clip),
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": adam},
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": False},
        # DeepSpeed otherwise accumulates bf16 gradients across micro-batches in bf16 (ZeRO-3's
        # partition buffers take the model's dtype); the reduce-scatter itself stays bf16.
        "data_types": {"grad_accum_dtype": "fp32"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if learner.warmup_steps > 0:
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": lr,
                "warmup_num_steps": learner.warmup_steps,
                "warmup_type": "linear",
            },
        }
    return config
