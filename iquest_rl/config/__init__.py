"""Typed configs: YAML on disk, frozen pydantic models in memory, dotted overrides on the CLI."""

from __future__ import annotations

from pathlib import Path

from .algo import GRPOConfig, KLConfig, PPOConfig
from .base import ConfigError, StrictModel, apply_overrides, dump_yaml, load_model
from .data import TaskSourceConfig, TasksConfig
from .learner import LearnerConfig, LoRAConfig
from .logging import LoggingConfig
from .model import ModelConfig
from .reward import RewardConfig, RewardTermConfig
from .rollout import AgentConfig, RolloutConfig, SamplingConfig
from .run import RayConfig, RunConfig
from .sandbox import SandboxConfig
from .sft import SFTConfig, SFTDataSource

__all__ = [
    "AgentConfig", "ConfigError", "GRPOConfig", "KLConfig", "LearnerConfig", "LoRAConfig", "LoggingConfig", "ModelConfig",
    "PPOConfig", "RayConfig", "RewardConfig", "RewardTermConfig", "RolloutConfig", "RunConfig",
    "SFTConfig", "SFTDataSource", "SamplingConfig", "SandboxConfig", "StrictModel", "TaskSourceConfig",
    "TasksConfig", "apply_overrides", "dump_yaml", "kind_of", "load", "load_model",
]


def kind_of(path: str | Path) -> type[StrictModel]:
    """RunConfig or SFTConfig, from the file's top-level `kind:` key (default: run)."""
    from .base import load_yaml

    kind = load_yaml(path).get("kind", "run")
    if kind not in ("run", "sft"):
        raise ConfigError(f"{path}: kind: must be 'run' or 'sft', got {kind!r}")
    return SFTConfig if kind == "sft" else RunConfig


def load(path: str | Path | None, overrides: list[str] = (), cls: type[StrictModel] | None = None):
    """Load a recipe; `kind: sft` files become SFTConfig, everything else RunConfig."""
    from .base import load_yaml, validate

    cls = cls or (kind_of(path) if path else RunConfig)
    data = apply_overrides(load_yaml(path) if path else {}, list(overrides))
    data.pop("kind", None)
    return validate(cls, data, source=str(path) if path else "<overrides>", overrides=list(overrides))
