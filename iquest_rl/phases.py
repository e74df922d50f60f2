"""The controller's steps, one function each, with their fault handling and timing.

Only this module and launch.py make Ray calls. A phase that misses its deadline raises PhaseTimeout
naming the phase and the workers still busy. A rollout worker that dies is restarted by Ray; its
chunk is resubmitted after the current weights are pushed to it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .launch import Cluster
from .types import RewardResult, Task, TrainBatch, Trajectory

log = logging.getLogger(__name__)
MAX_RESUBMITS = 3


class PhaseTimeout(RuntimeError):
    pass


@dataclass
class WeightState:
    """The newest weights every rollout worker must serve (kept on disk until the next push)."""

    version: int = 0
    update: Any = None


def _chunks(items: list, k: int) -> list[list[int]]:
    """Indices of items dealt round-robin into k chunks (empty chunks dropped)."""
    out = [list(range(i, len(items), k)) for i in range(k)]
    return [c for c in out if c]


def _get(refs: list[Any], deadline: float, phase: str) -> list[Any]:
    import ray

    left = deadline - time.monotonic()
    ready, busy = ray.wait(refs, num_returns=len(refs), timeout=max(left, 0.0))
    if busy:
        raise PhaseTimeout(f"phase {phase}: {len(busy)} of {len(refs)} calls still running at the deadline")
    return ray.get(refs)


def generate(cluster: Cluster, tasks: list[Task], n: int, seed: int, weights: WeightState,
             timeout_s: float) -> list[Trajectory]:
    """n trajectories per task, grouped by task: group_id = index of the task in `tasks`."""
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout_s
    workers = cluster.rollouts
    for worker in workers:  # a worker Ray restarted between steps would otherwise serve its initial weights
        ensure_weights(worker, weights, deadline)
    chunks = _chunks(tasks, len(workers))
    pending = {w: ([tasks[i] for i in idx], idx) for w, idx in enumerate(chunks)}
    results: dict[int, list[Trajectory]] = {}
    attempts = {w: 0 for w in pending}
    while pending:
        refs = {w: workers[w].rollout.remote(chunk, n, seed + 7919 * w) for w, (chunk, _) in pending.items()}
        for w, ref in refs.items():
            try:
                results[w] = _get([ref], deadline, "generate")[0]
                del pending[w]
            except RayActorError as e:
                attempts[w] += 1
                if attempts[w] > MAX_RESUBMITS:
                    raise RuntimeError(f"rollout-{w} died {attempts[w]} times in one step; last error: {e}") from e
                log.warning("rollout-%d died mid-step (%s); resubmitting its %d tasks", w, e, len(pending[w][0]))
                ensure_weights(workers[w], weights, deadline)
    out: list[Trajectory] = []
    for w in sorted(results):
        for traj in results[w]:
            traj.group_id = chunks[w][traj.group_id]
            out.append(traj)
    out.sort(key=lambda t: t.group_id)  # stable: sample order within a group is kept
    return out


def ensure_weights(worker: Any, weights: WeightState, deadline: float) -> None:
    """Wait for a (restarted) rollout worker and push the current weights if it serves older ones."""
    import ray
    from ray.exceptions import RayActorError

    while True:
        try:
            version = ray.get(worker.version.remote(), timeout=max(deadline - time.monotonic(), 1.0))
            break
        except RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    if weights.update is not None and version != weights.version:
        from .weight_sync.gather import check_fingerprints

        check_fingerprints(weights.update, [ray.get(worker.update_weights.remote(weights.update))])


def score(cluster: Cluster, tasks: list[Task], trajs: list[Trajectory], timeout_s: float) -> list[RewardResult]:
    """One RewardResult per trajectory (infrastructure errors included, never as 0)."""
    deadline = time.monotonic() + timeout_s
    items = [(tasks[t.group_id], t) for t in trajs]
    chunks = _chunks(items, len(cluster.rewards))
    refs = [cluster.rewards[w].score.remote([items[i] for i in idx]) for w, idx in enumerate(chunks)]
    out: list[RewardResult | None] = [None] * len(items)
    for idx, res in zip(chunks, _get(refs, deadline, "reward")):
        for i, r in zip(idx, res):
            out[i] = r
    return out  # type: ignore[return-value]


def train(cluster: Cluster, batch: TrainBatch, algo: Any, timeout_s: float) -> dict[str, float]:
    """One learner update on every rank (PPO: values, GAE, critic step first)."""
    import ray

    deadline = time.monotonic() + timeout_s
    ref = ray.put(batch)
    metrics: dict[str, float] = {}
    if algo.name == "ppo":
        metrics.update(_ppo_prepare(cluster, batch, algo, deadline))
        ref = ray.put(batch)
        critic = _get([a.train_critic_step.remote(ref) for a in cluster.learners], deadline, "train")[0]
        metrics.update({f"critic/{k}": v for k, v in critic.items()})
    policy = _get([a.train_step.remote(ref) for a in cluster.learners], deadline, "train")[0]
    metrics.update(policy)
    return metrics


def _ppo_prepare(cluster: Cluster, batch: TrainBatch, algo: Any, deadline: float) -> dict[str, float]:
    """Fill batch.advantages/returns/old_values from the critic: token rewards -> GAE -> whitening."""
    from .algos.advantages import gae, whiten
    from .algos.batch import token_rewards

    values = _get([a.compute_values.remote(batch) for a in cluster.learners], deadline, "train")[0]
    mask = batch.loss_mask.float()
    adv, ret = gae(token_rewards(batch.rewards, mask), values, mask, algo.gamma, algo.lam)
    batch.advantages = whiten(adv, mask)
    batch.returns, batch.old_values = ret, values
    return {"critic/value_mean": float((values * mask).sum() / mask.sum().clamp(min=1))}


def sync(cluster: Cluster, weights: WeightState, version: int, timeout_s: float) -> dict[str, float]:
    """Gather the learners' weights, push them to every rollout worker, verify what they serve."""
    from .weight_sync.buckets import remove_update
    from .weight_sync.gather import check_fingerprints

    deadline = time.monotonic() + timeout_s
    t0 = time.monotonic()
    out = _get([a.export_weights.remote(version) for a in cluster.learners], deadline, "sync")[0]
    update = out["update"]
    fps = _get([r.update_weights.remote(update) for r in cluster.rollouts], deadline, "sync")
    check_fingerprints(update, fps)
    if weights.update is not None:
        remove_update(weights.update)
    weights.version, weights.update = version, update
    return {"sync/seconds": time.monotonic() - t0, "sync/bytes": float(out.get("nbytes", 0))}
