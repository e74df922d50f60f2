"""From a trajectory to its task runtime's grade, and the reward boundary `score_trajectory`.

What each family grades:
  swe         trajectory.meta["patch"] (the agent sandbox's diff) in a fresh container
  code_tests  trajectory.meta["solution"], else the last ```python block of the last sampled turn
  terminal    the grade the rollout side took in the agent's live sandbox, passed in
              trajectory.meta["grade"] (TerminalRuntime.grade(...).to_dict()): the end state
              lives in that container, which is gone by the time rewards run
A precomputed trajectory.meta["grade"] is used for any family.
"""

from __future__ import annotations

import logging

from iquest_rl.types import Outcome, RewardResult, Task, Trajectory
from sandboxes.runtimes.common import GradeResult, SandboxFactory, infra

from .base import Reward, infra_result

log = logging.getLogger(__name__)


class Graders:
    """Task runtimes by task source, created on first use with one shared sandbox factory."""

    def __init__(self, sandboxes: SandboxFactory | None = None, swe_test_timeout_s: float = 600.0,
                 labels: dict[str, str] | None = None):
        self.sandboxes = sandboxes
        self.swe_test_timeout_s = swe_test_timeout_s
        self.labels = labels
        self._runtimes: dict[str, object] = {}

    def runtime(self, source: str):
        if source not in self._runtimes:
            if source == "swe":
                from sandboxes.runtimes.swe import SWERuntime
                self._runtimes[source] = SWERuntime(self.sandboxes, self.swe_test_timeout_s, labels=self.labels)
            elif source == "code_tests":
                from sandboxes.runtimes.code_tests import CodeTestsRuntime
                self._runtimes[source] = CodeTestsRuntime(self.sandboxes, labels=self.labels)
            elif source == "terminal":
                from sandboxes.runtimes.terminal import TerminalRuntime
                self._runtimes[source] = TerminalRuntime(self.sandboxes, labels=self.labels)
            else:
                raise ValueError(f"no task runtime for source {source!r} (swe, terminal, code_tests)")
        return self._runtimes[source]

    def grade(self, task: Task, trajectory: Trajectory) -> GradeResult:
        pre = trajectory.meta.get("grade")
        if pre is not None:
            return pre if isinstance(pre, GradeResult) else GradeResult.from_dict(pre)
        if task.source == "swe":
            patch = trajectory.meta.get("patch")
            if patch is None:
                return infra(f"{task.task_id}: trajectory has no meta['patch'] (the agent sandbox's diff)")
            return self.runtime("swe").grade(task, patch)
        if task.source == "code_tests":
            from sandboxes.runtimes.code_tests import extract_code
            code = trajectory.meta.get("solution")
            if code is None:
                sampled = [t for t in trajectory.turns if t.sampled]
                code = extract_code(sampled[-1].text) if sampled else None
            if code is None:
                n = len(task.meta.get("tests", []))
                return GradeResult(Outcome.FAILED, 0, n, {}, "no ```python code block in the answer")
            return self.runtime("code_tests").grade(task, code)
        if task.source == "terminal":
            return infra(f"{task.task_id}: terminal trajectories must carry meta['grade'] taken in the "
                         "agent's sandbox (TerminalRuntime.grade)")
        return infra(f"{task.task_id}: no grader for source {task.source!r}")


def score_trajectory(reward: Reward, task: Task, trajectory: Trajectory, graders: Graders | None) -> RewardResult:
    """Grade (when the reward needs it) and score. The reward boundary: never raises; any error
    becomes an INFRA_ERROR result that keeps its message."""
    try:
        grade = None
        if reward.needs_grade:
            if graders is None:
                return infra_result(f"{task.task_id}: reward {reward.name} needs a grader")
            grade = graders.grade(task, trajectory)
        return reward.score(task, trajectory, grade)
    except Exception as e:  # noqa: BLE001 - the boundary: a bug here must not become reward 0
        log.exception("scoring %s failed", task.task_id)
        return infra_result(f"{task.task_id}: scoring raised {type(e).__name__}: {e}")
