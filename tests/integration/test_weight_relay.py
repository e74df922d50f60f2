"""Weight sync across Ray nodes: a RolloutWorker on another node than learner rank 0 pulls the bucket
files through Ray's object store and then serves exactly the learner's weights; a bucket damaged at
the source fails its checksum there and the previous weights stay served; the learner serves no file
outside its transport root. Two Ray nodes on this machine (ray.cluster_utils.Cluster): the learner can
only be placed on the head, the rollout worker only on the other node."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.deepspeed]


class _Served:
    """support.policy.served_logprobs over a rollout actor."""

    def __init__(self, ray, actor):
        self.ray, self.actor = ray, actor

    def probe_logprobs(self, rows):
        return self.ray.get(self.actor.probe_logprobs.remote(rows))


@pytest.fixture(scope="module")
def two_nodes(tiny_model_path):
    import ray
    from ray.cluster_utils import Cluster

    from iquest_rl.actors.learner import NAMESPACE, start_learner_group
    from iquest_rl.actors.rollout import rollout_actor_cls
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig
    from iquest_rl.config.rollout import RolloutConfig

    store = 150 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=0, resources={"away": 1}, object_store_memory=store)
    run_id = f"relay-{uuid.uuid4().hex[:8]}"
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"IQUEST_RL_RUN_ID": run_id}})
    cluster.wait_for_nodes()
    model = ModelConfig(path=tiny_model_path, dtype="float32")
    learner = start_learner_group(model, LearnerConfig(lr=1e-2, micro_batch_size=2, grad_accum=1), GRPOConfig(),
                                  group="relay", num_cpus=0.5)[0]
    rollout = rollout_actor_cls(num_cpus=0).options(name="relay-rollout", resources={"away": 1}).remote(
        model, RolloutConfig(max_model_len=256, max_num_seqs=8))
    ray.get(rollout.health.remote(), timeout=300)
    try:
        yield ray, learner, rollout
    finally:
        ray.get([rollout.drop_weight_files.remote(), learner.drop_weight_files.remote()], timeout=60)
        ray.get(rollout.shutdown.remote(), timeout=60)
        ray.kill(rollout)
        ray.kill(learner)
        ray.shutdown()
        cluster.shutdown()


def _batch():
    import torch

    from iquest_rl.types import TrainBatch

    g = torch.Generator().manual_seed(3)
    n, t = 4, 20
    ids = torch.randint(3, 1000, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    lm = am.float().clone()
    lm[:, :4] = 0
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * lm
    return TrainBatch(input_ids=ids, attention_mask=am, loss_mask=lm, advantages=adv, rollout_logprobs=torch.zeros(n, t))


def test_rollout_on_another_node_pulls_and_serves_the_learners_weights(two_nodes):
    import torch

    from iquest_rl.weight_sync.buckets import WeightSyncError
    from iquest_rl.weight_sync.gather import check_fingerprints
    from support.policy import served_logprobs

    ray, learner, rollout = two_nodes
    rollout_node = ray.get(rollout.node_id.remote())
    batch = _batch()
    served = _Served(ray, rollout)
    before = served_logprobs(served, batch.input_ids)
    batch.rollout_logprobs = before * batch.loss_mask
    ray.get(learner.train_step.remote(batch))

    update = ray.get(learner.export_weights.remote(1))["update"]
    assert update.source == "relay-0" and update.origin and update.origin != rollout_node
    fp = ray.get(rollout.update_weights.remote(update))
    check_fingerprints(update, [fp])
    assert ray.get(rollout.health.remote())["relayed_bytes"] == sum(update.sizes) > 1e6
    after = served_logprobs(served, batch.input_ids)
    learner_lp = ray.get(learner.compute_logprobs.remote(batch))["logprobs"]
    assert float((after - before).abs().max()) > 1e-2, "the update did not change the served model"
    assert float((after - learner_lp).abs().max()) <= 1e-4

    # The pulled copies, not the learner's files, were loaded: they sit in the worker's relay folder.
    root = Path(update.bucket_paths[0]).parents[1]
    pulled = sorted((root / f"relay-{rollout_node[:12]}" / "v1").iterdir())
    assert [p.name for p in pulled] == sorted(Path(p).name for p in update.bucket_paths)
    assert sorted(p.stat().st_size for p in pulled) == sorted(update.sizes)

    # Version 2, one byte flipped at the source after its checksum: caught on the far node.
    ray.get(learner.train_step.remote(batch))
    update2 = ray.get(learner.export_weights.remote(2))["update"]
    ray.get(learner.retire_update.remote(update))
    assert not Path(update.bucket_paths[0]).exists()
    with open(update2.bucket_paths[-1], "r+b") as f:
        f.seek(-5, 2)
        byte = f.read(1)
        f.seek(-5, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightSyncError, match="checksum"):
        ray.get(rollout.update_weights.remote(update2))
    assert ray.get(rollout.fingerprint.remote()) == fp  # still serving version 1
    assert torch.equal(served_logprobs(served, batch.input_ids), after)


def test_learner_serves_only_its_own_bucket_files(two_nodes):
    from iquest_rl.weight_sync.buckets import WeightSyncError

    ray, learner, _ = two_nodes
    with pytest.raises(WeightSyncError, match="not a bucket file"):
        ray.get(learner.bucket_bytes.remote("/etc/passwd"))
