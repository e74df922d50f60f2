"""Learner <-> vLLM: the ZeRO-3 learner's logprobs equal vLLM's for the same tokens (fp32 CPU), and after
a train step plus a bucketed weight sync the RolloutWorker serves the learner's new weights; a
corrupted bucket is detected and the worker keeps the previous version.

One vLLM engine (the project's RolloutWorker, vLLM prompt_logprobs underneath) in the pytest process;
one 1-rank learner as a Ray actor.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.deepspeed, pytest.mark.ray, pytest.mark.vllm]


def _probe_batch():
    import torch

    from iquest_rl.types import TrainBatch

    g = torch.Generator().manual_seed(7)
    n, t = 6, 24
    ids = torch.randint(3, 1000, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    lm = am.float().clone()
    lm[:, :4] = 0
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.5, -1.5])[:, None] * lm
    return TrainBatch(input_ids=ids, attention_mask=am, loss_mask=lm, advantages=adv,
                      rollout_logprobs=torch.zeros(n, t))


@pytest.fixture(scope="module")
def stack(tiny_model_path):
    import ray

    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.actors.rollout import RolloutWorker
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig
    from iquest_rl.config.rollout import RolloutConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = ModelConfig(path=tiny_model_path, dtype="float32")
    learner = start_learner_group(model, LearnerConfig(lr=1e-2, micro_batch_size=2, grad_accum=1), GRPOConfig(),
                                  group="sync", num_cpus=0.5)[0]
    rollout = RolloutWorker(model, RolloutConfig(max_model_len=256, max_num_seqs=8))
    yield ray, learner, rollout
    rollout.shutdown()
    ray.kill(learner)
    ray.shutdown()


def _vllm_logprobs(rollout, batch):
    from support.policy import served_logprobs

    return served_logprobs(rollout, batch.input_ids)


def test_learner_logprobs_equal_vllm(stack):
    ray, learner, rollout = stack
    batch = _probe_batch()
    lp = ray.get(learner.compute_logprobs.remote(batch))["logprobs"]
    diff = (lp - _vllm_logprobs(rollout, batch)).abs().max()
    assert float(diff) <= 1e-4, f"learner vs vLLM logprobs differ by {float(diff):.2e}"


def test_weight_sync_serves_trained_weights_and_detects_corruption(stack, tmp_path):
    import torch

    from iquest_rl.weight_sync.buckets import WeightSyncError
    from iquest_rl.weight_sync.gather import check_fingerprints

    ray, learner, rollout = stack
    batch = _probe_batch()
    before = _vllm_logprobs(rollout, batch)
    batch.rollout_logprobs = before * batch.loss_mask
    m = ray.get(learner.train_step.remote(batch))
    assert m["mismatch/abs_diff_max"] < 1e-4  # the rollout and learner agreed before the step
    out = ray.get(learner.export_weights.remote(1, str(tmp_path)))
    update = out["update"]
    assert len(update.bucket_paths) >= 1 and out["nbytes"] > 1e6
    assert not any(".lora_" in n or "base_layer" in n for b in update.names for n in b)
    fp = rollout.update_weights(update)
    check_fingerprints(update, [fp])
    served = _vllm_logprobs(rollout, batch)
    learner_lp = ray.get(learner.compute_logprobs.remote(batch))["logprobs"]
    assert float((served - before).abs().max()) > 1e-2, "the update did not change the served model"
    assert float((served - learner_lp).abs().max()) <= 1e-4

    # version 2, with one byte flipped inside a bucket's tensor data
    ray.get(learner.train_step.remote(batch))
    update2 = ray.get(learner.export_weights.remote(2, str(tmp_path)))["update"]
    path = update2.bucket_paths[-1]
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(WeightSyncError, match="checksum"):
        rollout.update_weights(update2)
    assert rollout.fingerprint() == fp  # still serving version 1
    assert torch.equal(_vllm_logprobs(rollout, batch), served)
    with pytest.raises(WeightSyncError, match="version"):
        check_fingerprints(update2, [fp])
