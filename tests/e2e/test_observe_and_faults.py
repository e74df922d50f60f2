"""During a run: named actors and the project's metrics are visible through Ray's state and metrics
APIs; a RolloutWorker killed mid-step is restarted, re-synced and its episodes resubmitted.
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


def test_actors_metrics_visible_and_rollout_kill_survived(tmp_path, caplog):
    import ray
    from ray.util.state import list_actors

    from iquest_rl.controller import run

    cfg = load(ROOT / "experiments/local/swe_grpo.yaml", [f"output_dir={tmp_path}", "name=observe", "steps=3",
                                                          "logging.progress_bar=false"])
    seen: dict = {}
    killed = threading.Event()

    def kill_rollout_soon() -> None:
        time.sleep(1.5)  # step 2's episodes are in flight by now
        ray.kill(ray.get_actor("rollout-0", namespace="iquest-rl"), no_restart=False)
        killed.set()

    def on_step(step: int, metrics: dict) -> None:
        if step != 1:
            return
        gcs = ray._private.worker.global_worker.node.address  # other Ray clusters may run on this host
        names = {a.name for a in list_actors(address=gcs, filters=[("state", "=", "ALIVE")]) if a.name}
        seen["actors"] = names
        deadline = time.monotonic() + 60  # Ray exports custom metrics every few seconds
        while time.monotonic() < deadline:
            text = _prometheus_text()
            if "iquest_rl_reward_mean" in text and "iquest_rl_time_generate" in text:
                seen["metrics"] = True
                break
            time.sleep(2)
        threading.Thread(target=kill_rollout_soon, daemon=True).start()

    with caplog.at_level(logging.WARNING, logger="iquest_rl.phases"):
        state = run(cfg, tmp_path / "observe", on_step=on_step)
    assert {"rollout-0", "learner-0", "learner-1", "reward-0"} <= seen["actors"]
    assert seen.get("metrics"), "project metrics never appeared in Ray's Prometheus export"
    assert killed.is_set()
    assert "rollout-0 died mid-step" in caplog.text
    assert state.step == 3
    from iquest_rl.metrics import read_metrics
    from iquest_rl.trajectory_store import iter_records

    rows = read_metrics(tmp_path / "observe")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["sync/bytes"] > 0
    # The restarted worker was re-synced before it sampled again: step 2 and 3 samples carry the
    # learner's current version, not the initial weights.
    for rec in iter_records(tmp_path / "observe"):
        versions = {t["policy_version"] for t in rec["turns"] if t["sampled"]}
        assert versions == {rec["step"] - 1}, (rec["step"], versions)
    assert ours(tmp_path / "observe") == []
