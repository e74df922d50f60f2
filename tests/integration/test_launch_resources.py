"""launch() refuses a layout the Ray cluster cannot place (Ray would leave the actors pending forever)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


def test_too_few_gpus_is_an_error_naming_the_fields():
    import ray

    from iquest_rl import config
    from iquest_rl.launch import launch

    cfg = config.load(ROOT / "experiments/local/digits_grpo.yaml",
                      ["rollout.num_workers=2", "rollout.tensor_parallel_size=2", "learner.num_ranks=2"])
    ray.init(num_cpus=1, num_gpus=3, include_dashboard=False, log_to_driver=False)  # declared GPUs: enough for Ray
    try:
        with pytest.raises(ValueError, match=r"needs 6 GPUs .*rollout.num_workers=2 .* has 3"):
            launch(cfg, "test-resources")
        assert not ray.util.list_named_actors(all_namespaces=True)  # nothing was started
    finally:
        ray.shutdown()
