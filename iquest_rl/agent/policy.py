"""What the agent loop needs from a model: token ids in, sampled token ids with logprobs out.

The RolloutWorker implements `Policy` over vLLM. `ScriptedPolicy` emits predetermined text through
the same tokenizer (and so the same parser) — a stand-in model for tests and demos of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from iquest_rl.config.rollout import SamplingConfig


@dataclass
class Sample:
    token_ids: list[int]
    """Sampled ids, including the end-of-turn token when the model stopped on it."""
    logprobs: list[float]
    """Logprob of each sampled id under the sampling policy, same length as token_ids."""
    finish_reason: str
    """"stop" (end token or stop string) or "length" (max_tokens reached)."""
    policy_version: int


@runtime_checkable
class Policy(Protocol):
    def generate(self, prompt_ids: list[int], sampling: SamplingConfig, max_tokens: int) -> Sample:
        """Continue `prompt_ids` with at most max_tokens tokens."""
        ...


class ScriptedPolicy:
    """Replies with the given texts in order, each followed by the tokenizer's end-of-turn token.

    Records every prompt it receives in `prompts` (what "the engine saw"), so tests can check
    the trajectory against it. Logprobs are fixed fake values (-0.5 per token).
    """

    def __init__(self, tokenizer: Any, replies: Sequence[str], policy_version: int = 0,
                 end_token: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.policy_version = policy_version
        end = end_token if end_token is not None else tokenizer.eos_token
        if end is None:
            raise ValueError("ScriptedPolicy: tokenizer has no eos_token; pass end_token")
        self.end_id = tokenizer.convert_tokens_to_ids(end)
        self.prompts: list[list[int]] = []

    def generate(self, prompt_ids: list[int], sampling: SamplingConfig, max_tokens: int) -> Sample:
        if len(self.prompts) >= len(self.replies):
            raise IndexError(f"ScriptedPolicy: no reply scripted for turn {len(self.prompts) + 1} "
                             f"({len(self.replies)} replies given)")
        text = self.replies[len(self.prompts)]
        self.prompts.append(list(prompt_ids))
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.end_id]
        finish = "stop"
        if len(ids) > max_tokens:
            ids, finish = ids[:max_tokens], "length"
        return Sample(ids, [-0.5] * len(ids), finish, self.policy_version)
