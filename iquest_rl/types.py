"""The data contracts: everything that crosses a process boundary is one of these dataclasses.

A trajectory is token-exact: the ids vLLM sampled with their logprobs, the tokenized observations,
a loss mask that is 1 only on sampled tokens, and the policy version of each turn. Training
sequences are built by concatenating these ids, never by re-rendering the chat template.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    """Three-valued sandbox outcome. INFRA_ERROR is never a reward of 0: it is retried or dropped."""

    PASSED = "passed"
    FAILED = "failed"
    INFRA_ERROR = "infra_error"


@dataclass(frozen=True)
class Task:
    """One unit of work for an episode: a prompt plus what the reward needs to grade it."""

    task_id: str
    source: str
    """Task family: "swe", "terminal", "code_tests", "messages", ..."""
    prompt: list[dict[str, Any]]
    """Chat messages that open the episode (system/user)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific grading data (tests, image, base commit, ...); JSON-serialisable."""


@dataclass
class Turn:
    """A contiguous run of tokens in a trajectory: either sampled by the policy or given to it."""

    token_ids: list[int]
    sampled: bool
    """True for tokens the policy sampled (loss mask 1); False for prompt, template and observations."""
    logprobs: list[float] | None = None
    """Per-token logprob under the sampling policy; required when sampled, None otherwise."""
    policy_version: int | None = None
    """Weight version that sampled this turn; None for non-sampled turns."""
    text: str = ""
    """Decoded text, for logs and inspection only; never used to build training ids."""

    def __post_init__(self) -> None:
        if self.sampled:
            if self.logprobs is None or len(self.logprobs) != len(self.token_ids):
                raise ValueError(
                    f"sampled turn needs one logprob per token: {len(self.token_ids)} ids, "
                    f"{None if self.logprobs is None else len(self.logprobs)} logprobs"
                )


@dataclass
class Trajectory:
    """One episode, token-exact. `turns` concatenated are exactly the ids the engine saw."""

    task_id: str
    source: str
    turns: list[Turn]
    finish_reason: str = ""
    """Why the episode ended: "submit", "stop", "length", "max_turns", "max_context", "timeout", "error"."""
    group_id: int = 0
    """GRPO group index: trajectories for the same task in the same step share it."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Agent statistics (tool calls, malformed calls, thinking length, patch, ...)."""

    @property
    def token_ids(self) -> list[int]:
        return [t for turn in self.turns for t in turn.token_ids]

    @property
    def loss_mask(self) -> list[int]:
        return [int(turn.sampled) for turn in self.turns for _ in turn.token_ids]

    @property
    def rollout_logprobs(self) -> list[float]:
        """Sampling logprobs aligned with token_ids; 0.0 on non-sampled positions."""
        out: list[float] = []
        for turn in self.turns:
            out.extend(turn.logprobs if turn.sampled else [0.0] * len(turn.token_ids))
        return out

    @property
    def num_sampled(self) -> int:
        return sum(len(t.token_ids) for t in self.turns if t.sampled)

    @property
    def min_policy_version(self) -> int | None:
        versions = [t.policy_version for t in self.turns if t.sampled and t.policy_version is not None]
        return min(versions) if versions else None


@dataclass
class RewardResult:
    """A reward for one trajectory. When outcome is INFRA_ERROR the reward is meaningless."""

    reward: float
    outcome: Outcome
    components: dict[str, float] = field(default_factory=dict)
    """Named parts of the reward (e.g. resolved, penalties), for metrics."""
    reason: str = ""
    """Why: failing test ids, the infrastructure error message, ..."""
    log_excerpt: str = ""
    """Head and tail of the grading log, for the trajectory store."""

    @property
    def is_infra_error(self) -> bool:
        return self.outcome is Outcome.INFRA_ERROR


@dataclass
class TrainBatch:
    """Padded tensors for a learner update, built from trajectories by iquest_rl.algos.

    Shapes: (batch, seq) for the token-level fields, (batch,) for the per-sequence fields.
    Fields hold torch tensors; the dataclass does not import torch.
    """

    input_ids: Any
    attention_mask: Any
    loss_mask: Any
    """1 where the token was sampled by the policy (loss is taken there), else 0."""
    advantages: Any
    rollout_logprobs: Any
    """Logprobs from the sampling engine, aligned with input_ids (0 on masked positions)."""
    old_logprobs: Any | None = None
    """Learner logprobs before the update (PPO ratio denominator); None uses rollout_logprobs."""
    ref_logprobs: Any | None = None
    returns: Any | None = None
    old_values: Any | None = None
    policy_versions: Any | None = None
    """(batch,) policy version of each sequence, for staleness metrics."""
    rewards: Any | None = None
    """(batch,) sequence reward after overlong shaping; PPO turns it into token rewards for GAE."""
    group_ids: Any | None = None
    """(batch,) GRPO group of each sequence (advantages are recomputed when KL goes into the reward)."""
