"""Run a step's episodes where the engine lives: (task × n) agent loops on threads, so the engine
batches every in-flight turn together.

Each episode runs through its task family's runtime (sandboxes/runtimes/family.py): multi-turn
episodes get the family's sandbox, and `finish` leaves what grading needs in `meta` (a submission, or
the grade itself for families graded in the episode). An infrastructure error during an episode
yields a trajectory with finish_reason "infra_error" and the message in meta["infra_error"]; the
controller drops it from the loss and counts it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from iquest_rl.config.model import ModelConfig
from iquest_rl.config.rollout import AgentConfig, SamplingConfig
from iquest_rl.config.sandbox import SandboxConfig
from iquest_rl.types import Task, Trajectory
from sandboxes.runtimes.family import RuntimeContext, run_episode
from sandboxes.runtimes.registry import Runtimes

log = logging.getLogger(__name__)

PolicyFactory = Callable[[int], Any]
"""seed -> an agent.policy.Policy (one per episode, so each episode's sampling is reproducible)."""
GenerateMany = Callable[[list[list[int]], list[int], list[int]], list[Any]]
"""(prompt ids, seeds, max_tokens), one each per sample -> one Sample each, drawn as a policy of that
seed draws its first turn (VLLMEngine.generate_many)."""


class EpisodeRunner:
    """Runs episodes for one tokenizer, agent config and sandbox config; holds runtimes across steps."""

    def __init__(self, tokenizer: Any, agent: AgentConfig, model: ModelConfig, sandbox: SandboxConfig,
                 labels: dict[str, str] | None = None):
        from iquest_rl.agent.loop import AgentLoop

        self.agent_cfg = agent
        self.loop = AgentLoop(tokenizer, agent, model)
        self.tokenizer = tokenizer
        self.sandbox_cfg = sandbox
        self.runtimes = Runtimes(RuntimeContext(labels=dict(labels or {}), sandbox=sandbox,
                                                test_timeout_s=sandbox.test_timeout_s))

    def run(self, tasks: list[Task], n: int, sampling: SamplingConfig, policy_for: PolicyFactory,
            seed: int, generate_many: GenerateMany | None = None) -> list[Trajectory]:
        """n episodes per task; trajectories come back grouped (task order, then sample order) with
        group_id = task index. Episode seeds derive from `seed`, the task index and the sample index.
        Single-turn episodes go to `generate_many` in one call when given (the samples a seeded policy
        would draw, without a thread and a prompt rendering per episode)."""
        jobs = [(g, k, task) for g, task in enumerate(tasks) for k in range(n)]
        seeds = [seed * 1_000_003 + g * 1009 + k for g, k, _ in jobs]
        if self.agent_cfg.mode == "single_turn" and generate_many is not None:
            out = self._single_turn_batch(tasks, jobs, seeds, sampling, generate_many)
        else:
            workers = self.sandbox_cfg.max_concurrency if self.agent_cfg.mode == "multi_turn" else max(len(jobs), 1)
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
                futures = [pool.submit(self._episode, task, policy_for(s), sampling) for (_, _, task), s in zip(jobs, seeds)]
                out = [f.result() for f in futures]
        for (g, _, task), traj in zip(jobs, out):
            traj.group_id = g
            # For `iquest-rl export-sft`: the chat this episode started from and the tools it had.
            traj.meta["prompt"] = task.prompt
            if self.agent_cfg.mode == "multi_turn":
                traj.meta["tools"] = self.loop.tools
        return out

    def _single_turn_batch(self, tasks: list[Task], jobs: list[tuple[int, int, Task]], seeds: list[int],
                           sampling: SamplingConfig, generate_many: GenerateMany) -> list[Trajectory]:
        t0 = time.monotonic()
        prompts = [self.loop.single_turn_prompt(task) for task in tasks]  # once per task, not per episode
        budgets = [self.loop.single_turn_budget(ids, sampling) for _, ids in prompts]
        todo = [i for i, (g, _, _) in enumerate(jobs) if budgets[g] > 0]
        samples = generate_many([prompts[jobs[i][0]][1] for i in todo], [seeds[i] for i in todo],
                                [budgets[jobs[i][0]] for i in todo])
        by_job = dict(zip(todo, samples))
        out = [self.loop.single_turn_finish(task, *prompts[g], by_job.get(i), t0) for i, (g, _, task) in enumerate(jobs)]
        for (_, _, task), traj in zip(jobs, out):
            runtime = self.runtimes.get(task.source)
            if runtime.multi_turn:
                raise ValueError(f"task family {task.source!r} is multi-turn but rollout.agent.mode is single_turn")
            runtime.finish(task, None, traj)  # as run_episode does for a single-turn family
        return out

    def _episode(self, task: Task, policy: Any, sampling: SamplingConfig) -> Trajectory:
        runtime = self.runtimes.get(task.source)
        if runtime.multi_turn != (self.agent_cfg.mode == "multi_turn"):
            raise ValueError(f"task family {task.source!r} is {'multi' if runtime.multi_turn else 'single'}-turn "
                             f"but rollout.agent.mode is {self.agent_cfg.mode}")
        traj = run_episode(runtime, task, lambda sb: self.loop.run(task, policy, sampling, sb))
        if traj.finish_reason == "infra_error":
            log.warning("episode of %s hit an infrastructure error: %s", task.task_id, traj.meta["infra_error"])
        return traj
