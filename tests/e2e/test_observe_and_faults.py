"""During a run: named actors and the project's metrics are visible through Ray's state and metrics
APIs; a RolloutWorker and a RewardWorker killed while their step-2 calls run (step 3's when Ray reports
the call running late) are restarted (the rollout worker re-synced by the controller, the reward
worker's idempotent score call retried by Ray) and their work done again.
Runs the controller in this process (the test is the Ray driver)."""

import logging
import threading
import time
import urllib.request

import pytest

from iquest_rl.config import load
from support.runs import ROOT, ours

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.deepspeed, pytest.mark.docker, pytest.mark.slow]


def _prometheus_text() -> str:
    import ray

    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_actors_metrics_visible_and_rollout_kill_survived(tmp_path, caplog, monkeypatch):
    import ray
    from ray.util.state import list_actors, list_tasks

    from iquest_rl import phases
    from iquest_rl.controller import run

    cfg = load(ROOT / "experiments/local/swe_grpo.yaml", [f"output_dir={tmp_path}", "name=observe", "steps=3",
                                                          "logging.progress_bar=false"])
    seen: dict = {}
    killed: dict = {}
    waiting_in: dict = {}  # the phase whose calls the controller is waiting for, if any
    restartable = phases._restartable

    def tracked(actors, role, call, revive, deadline, phase):
        waiting_in["phase"] = phase
        try:
            return restartable(actors, role, call, revive, deadline, phase)
        finally:
            waiting_in.pop("phase", None)

    monkeypatch.setattr(phases, "_restartable", tracked)

    def kill_while_running(actor: str, task: str, phase: str) -> None:
        """Kill `actor` once Ray reports its `task` running while the controller waits in `phase`.
        Ray's task events lag and can still say RUNNING after the call returned, so the phase the
        controller is in decides, not the report alone."""
        gcs = ray._private.worker.global_worker.node.address
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if waiting_in.get("phase") == phase and list_tasks(
                    address=gcs, filters=[("name", "=", task), ("state", "=", "RUNNING")]) \
                    and waiting_in.get("phase") == phase:
                ray.kill(ray.get_actor(actor, namespace="iquest-rl"), no_restart=False)
                killed[actor] = True
                return
            time.sleep(0.2)

    def kill_both() -> None:
        kill_while_running("rollout-0", "RolloutWorker.rollout", "generate")
        kill_while_running("reward-0", "RewardWorker.score", "reward")

    def on_step(step: int, metrics: dict) -> None:
        if step != 1:
            return
        gcs = ray._private.worker.global_worker.node.address  # other Ray clusters may run on this host
        names = {a.name for a in list_actors(address=gcs, filters=[("state", "=", "ALIVE")]) if a.name}
        seen["actors"] = names
        deadline = time.monotonic() + 120  # Ray exports custom metrics every few seconds
        while time.monotonic() < deadline:
            try:
                text = _prometheus_text()
            except OSError:  # the metrics agent is busy or not up yet: ask again
                text = ""
            if "iquest_rl_reward_mean" in text and "iquest_rl_time_generate" in text:
                seen["metrics"] = True
                break
            time.sleep(2)
        threading.Thread(target=kill_both, daemon=True).start()

    with caplog.at_level(logging.WARNING, logger="iquest_rl.phases"):
        state = run(cfg, tmp_path / "observe", on_step=on_step)
    assert {"rollout-0", "learner-0", "learner-1", "reward-0"} <= seen["actors"]
    assert seen.get("metrics"), "project metrics never appeared in Ray's Prometheus export"
    assert killed == {"rollout-0": True, "reward-0": True}
    assert "rollout-0 died mid-step in phase generate" in caplog.text
    assert state.step == 3
    from iquest_rl.metrics import read_metrics
    from iquest_rl.trajectory_store import iter_records

    rows = read_metrics(tmp_path / "observe")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["sync/bytes"] > 0
    # The restarted worker was re-synced before it sampled again: step 2 and 3 samples carry the
    # learner's current version, not the initial weights.
    records = list(iter_records(tmp_path / "observe"))
    assert [sum(r["step"] == s for r in records) for s in (1, 2, 3)] == [4, 4, 4]
    # reward-0 died while grading step 2 (Ray retries its idempotent score calls): every trajectory
    # still has a graded reward.
    assert all(r["reward"] is not None and r["reward"]["outcome"] for r in records)
    for rec in records:
        versions = {t["policy_version"] for t in rec["turns"] if t["sampled"]}
        assert versions == {rec["step"] - 1}, (rec["step"], versions)
    assert ours(tmp_path / "observe") == []
