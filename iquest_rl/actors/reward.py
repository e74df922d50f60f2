"""RewardWorker: grades trajectories in sandboxes and turns grades into rewards.

Infrastructure errors are retried with backoff (reward.max_retries); one that persists comes back as
an INFRA_ERROR result, which the controller drops from the loss and counts — never a reward of 0.
The class is plain; `reward_actor_cls()` applies ray.remote (importing this module imports no Ray).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from iquest_rl.config.reward import RewardConfig
from iquest_rl.config.sandbox import SandboxConfig
from iquest_rl.types import Outcome, RewardResult, Task, Trajectory

NAMESPACE = "iquest-rl"


def actor_name(index: int) -> str:
    return f"reward-{index}"


class RewardWorker:
    def __init__(self, reward: RewardConfig, sandbox: SandboxConfig, labels: dict[str, str] | None = None):
        from rewards import build_reward
        from sandboxes.runtimes.family import RuntimeContext
        from sandboxes.runtimes.registry import Runtimes

        self.cfg = reward
        self.reward = build_reward(reward)
        self.runtimes = Runtimes(RuntimeContext(labels=dict(labels or {}), sandbox=sandbox,
                                                test_timeout_s=sandbox.test_timeout_s))
        self.concurrency = sandbox.max_concurrency

    def score(self, items: list[tuple[Task, Trajectory]]) -> list[RewardResult]:
        """One RewardResult per (task, trajectory), in order."""
        return [r for r, _ in self.score_graded(items)]

    def score_graded(self, items: list[tuple[Task, Trajectory]]) -> list[tuple[RewardResult, Any]]:
        """(RewardResult, the GradeResult it came from or None) per item, in order (`iquest-rl eval`
        reports per-test statuses and grading logs)."""
        if not self.reward.needs_grade:  # pure text rewards: a thread each would cost more than the scoring
            return [self._score_one(*it) for it in items]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(items) or 1))) as pool:
            return list(pool.map(lambda it: self._score_one(*it), items))

    def _score_one(self, task: Task, traj: Trajectory) -> tuple[RewardResult, Any]:
        from rewards.grading import grade_and_score

        if traj.finish_reason == "infra_error":
            reason = traj.meta.get("infra_error", "episode failed")
            return RewardResult(0.0, Outcome.INFRA_ERROR, reason=reason), None
        result, grade = grade_and_score(self.reward, task, traj, self.runtimes)
        for attempt in range(self.cfg.max_retries):
            if not result.is_infra_error:
                break
            time.sleep(min(2.0**attempt, 10.0))
            result, grade = grade_and_score(self.reward, task, traj, self.runtimes)
        return result, grade

    def ping(self) -> str:
        return "ok"


def reward_actor_cls(num_cpus: float = 0.25):
    import ray

    return ray.remote(num_cpus=num_cpus, max_restarts=-1, max_task_retries=2)(RewardWorker)
