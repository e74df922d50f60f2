"""Weight sync across Ray nodes: two RolloutWorkers on another node than learner rank 0 pull the
bucket files through Ray's object store at once, each into its own folder, load their copies and
then serve exactly the learner's weights; a bucket damaged at the source fails its checksum there
and the previous weights stay served; the learner serves no file outside its transport root. Two Ray
nodes on this machine (ray.cluster_utils.Cluster): the learner can only be placed on the head, the
rollout workers only on the other node."""

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
    rollouts = [rollout_actor_cls(num_cpus=0).options(name=f"relay-rollout-{i}", resources={"away": 0.5}).remote(
        model, RolloutConfig(max_model_len=256, max_num_seqs=8)) for i in range(2)]
    ray.get([r.health.remote() for r in rollouts], timeout=300)
    try:
        yield ray, learner, rollouts
    finally:
        ray.get([r.drop_weight_files.remote() for r in rollouts] + [learner.drop_weight_files.remote()], timeout=60)
        ray.get([r.shutdown.remote() for r in rollouts], timeout=60)
        for a in [*rollouts, learner]:
            ray.kill(a)
        ray.shutdown()
        cluster.shutdown()


def _batch(n: int = 4, t: int = 20):
    import torch

    from iquest_rl.types import TrainBatch

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 1000, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    lm = am.float().clone()
    lm[:, :4] = 0
    adv = torch.tensor([1.0, -1.0] * (n // 2))[:, None] * lm
    return TrainBatch(input_ids=ids, attention_mask=am, loss_mask=lm, advantages=adv, rollout_logprobs=torch.zeros(n, t))


def test_rollouts_on_another_node_pull_and_serve_the_learners_weights(two_nodes):
    import torch

    from iquest_rl.weight_sync.buckets import WeightSyncError
    from iquest_rl.weight_sync.gather import check_fingerprints
    from support.policy import served_logprobs

    ray, learner, rollouts = two_nodes
    rollout = rollouts[0]
    nodes = set(ray.get([r.node_id.remote() for r in rollouts]))
    batch = _batch()
    served = _Served(ray, rollout)
    before = served_logprobs(served, batch.input_ids)
    batch.rollout_logprobs = before * batch.loss_mask
    ray.get(learner.train_step.remote(batch))

    update = ray.get(learner.export_weights.remote(1))["update"]
    assert update.source == "relay-0" and update.origin and len(nodes) == 1 and update.origin not in nodes
    fps = ray.get([r.update_weights.remote(update) for r in rollouts])  # both pull at once
    check_fingerprints(update, fps)
    learner_lp = ray.get(learner.compute_logprobs.remote(batch))["logprobs"]
    for r in rollouts:
        after = served_logprobs(_Served(ray, r), batch.input_ids)
        assert float((after - before).abs().max()) > 1e-2, "the update did not change the served model"
        assert float((after - learner_lp).abs().max()) <= 1e-4

    # Each worker loaded its own pulled copies, not the learner's files.
    loaded = set()
    for r in rollouts:
        health = ray.get(r.health.remote())
        assert health["relayed_bytes"] == sum(update.sizes) > 1e6
        folder = Path(health["loaded_from"])
        assert folder.name == "v1" and folder.parent.name.startswith("relay-") and folder not in loaded
        assert sorted(p.name for p in folder.iterdir()) == sorted(Path(p).name for p in update.bucket_paths)
        loaded.add(folder)
    after = served_logprobs(served, batch.input_ids)

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
    assert ray.get(rollout.fingerprint.remote()) == fps[0]  # still serving version 1
    assert torch.equal(served_logprobs(served, batch.input_ids), after)


def test_learner_serves_only_its_own_bucket_files(two_nodes):
    from iquest_rl.weight_sync.buckets import WeightSyncError

    ray, learner, _ = two_nodes
    update = ray.get(learner.export_weights.remote(10))["update"]
    try:
        with pytest.raises(WeightSyncError, match="not a bucket file"):
            ray.get(learner.bucket_bytes.remote("/etc/passwd"))
        link = Path(update.bucket_paths[0]).parent / "link"
        link.symlink_to("/etc/passwd")
        with pytest.raises(OSError):  # not followed
            ray.get(learner.bucket_bytes.remote(str(link)))
        data = ray.get(learner.bucket_bytes.remote(update.bucket_paths[0]))
        assert bytes(data) == Path(update.bucket_paths[0]).read_bytes()
        # A pull is served while the learner trains (its own threads), not after the step.
        step = learner.train_step.remote(_batch(32, 192))
        ray.get(learner.bucket_bytes.remote(update.bucket_paths[0]), timeout=60)
        assert not ray.wait([step], timeout=0)[0], "the pull waited for the train step"
        ray.get(step)
    finally:
        ray.get(learner.retire_update.remote(update))
