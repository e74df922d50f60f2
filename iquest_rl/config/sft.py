"""SFTConfig: the `iquest-rl sft` recipe (Instruct and Thinking branches)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel
from .learner import LoRAConfig
from .model import ModelConfig


class SFTDataSource(StrictModel):
    path: str
    """Messages JSONL file, directory of them, or hub id; `name#N` samples N rows."""
    weight: float = Field(1.0, gt=0)
    """Mixing weight relative to the other sources."""


class SFTConfig(StrictModel):
    name: str = "sft"
    """Run name; the run directory is <output_dir>/<name>."""
    output_dir: str = "runs"
    """Parent directory of run directories."""
    branch: Literal["instruct", "thinking"] = "instruct"
    """instruct drops <think> content from assistant targets; thinking keeps it."""
    seed: int = 0
    """Seed for data order and initialisation."""
    model: ModelConfig = ModelConfig()
    """Model to fine-tune."""
    data: list[SFTDataSource] = [SFTDataSource(path="builtin:toy_messages")]
    """Training data sources."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Fraction of rows held out for validation."""
    bad_rows: Literal["fail", "skip"] = "fail"
    """What to do with malformed rows: fail the run, or skip and count them."""
    max_seq_len: int = Field(1024, ge=16)
    """Samples longer than this are bad rows."""
    packing: bool = False
    """Pack samples into max_seq_len sequences without attention across samples."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data."""
    max_steps: int = Field(0, ge=0)
    """Stop after N optimiser steps; 0 = run the epochs."""
    lr: float = Field(2e-5, gt=0)
    """AdamW learning rate."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per device per forward/backward."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimiser step."""
    num_ranks: int = Field(1, ge=1)
    """Processes launched by the CLI (ZeRO-3 data parallel)."""
    zero_stage: Literal[0, 1, 2, 3] = 3
    """DeepSpeed ZeRO stage."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    lora: LoRAConfig | None = None
    """LoRA adapters through PEFT; None = full fine-tune."""
    merge_lora: bool = True
    """Write merged full weights at the end (what vLLM and `iquest-rl run` load)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate validation loss every N steps; 0 = at the end only."""
    save_every: int = Field(0, ge=0)
    """Checkpoint every N steps; 0 = at the end only."""
