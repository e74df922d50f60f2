"""A pure-text verifiable reward for toy tasks: the fraction of answer characters in a charset.

Used by the CPU learning demo (experiments/local/digits_grpo.yaml): dense enough that GRPO on a
randomly initialised tiny model sees reward variance within every group from the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

from iquest_rl.types import Outcome, RewardResult, Task, Trajectory
from sandboxes.runtimes.common import GradeResult


@dataclass(frozen=True)
class CharFractionReward:
    """reward = (# answer characters in `charset`) / max(len(answer), min_length); PASSED when
    reward >= pass_threshold. The answer is the text after the last think-end marker."""

    name: str = "char_fraction"
    needs_grade: bool = False
    charset: str = "0123456789"
    """Characters that count."""
    min_length: int = 8
    """Denominator floor, so an empty or very short answer cannot score high."""
    pass_threshold: float = 0.9
    """Fraction at which the outcome counts as passed (pass-rate metric)."""
    think_end: str = "</think>"

    def score(self, task: Task, trajectory: Trajectory, grade: GradeResult | None = None) -> RewardResult:
        text = "".join(t.text for t in trajectory.turns if t.sampled)
        answer = text.rsplit(self.think_end, 1)[-1]
        # The end-of-turn token decodes to nothing (special) or to its marker; count neither.
        answer = answer.replace("<|im_end|>", "").replace("<|endoftext|>", "")
        hits = sum(ch in self.charset for ch in answer)
        value = hits / max(len(answer), self.min_length)
        outcome = Outcome.PASSED if value >= self.pass_threshold else Outcome.FAILED
        return RewardResult(value, outcome, {"hits": float(hits), "chars": float(len(answer))})
