"""PPO critic engine (values, clipped value-loss updates), LoRA learners with a merged export, and the frozen KL reference."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.deepspeed, pytest.mark.ray]


def _batch():
    import torch

    from iquest_rl.types import TrainBatch

    g = torch.Generator().manual_seed(5)
    n, t = 4, 12
    ids = torch.randint(3, 1000, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    lm = am.float().clone()
    lm[:, :3] = 0
    return TrainBatch(input_ids=ids, attention_mask=am, loss_mask=lm, advantages=torch.randn(n, 1, generator=g) * lm,
                      rollout_logprobs=torch.zeros(n, t), rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_ppo_critic_learns_returns(ray_cluster, tiny_model_path):
    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.algos.advantages import gae
    from iquest_rl.algos.batch import token_rewards
    from iquest_rl.config.algo import PPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig

    ray = ray_cluster
    actors = start_learner_group(ModelConfig(path=tiny_model_path), LearnerConfig(num_ranks=2, micro_batch_size=1, grad_accum=2),
                                 PPOConfig(critic_lr=5e-4, value_clip=0.0), group="ppo", num_cpus=0.25)
    batch = _batch()
    values = ray.get([a.compute_values.remote(batch) for a in actors])
    assert values[0].shape == batch.input_ids.shape and bool((values[0] == values[1]).all())
    adv, ret = gae(token_rewards(batch.rewards, batch.loss_mask), values[0], batch.loss_mask, 1.0, 0.95)
    batch.advantages, batch.returns, batch.old_values = adv, ret, values[0]
    losses = []
    for _ in range(6):
        m = ray.get([a.train_critic_step.remote(batch) for a in actors])[0]
        losses.append(m["vf_loss"])
    assert losses[-1] < 0.5 * losses[0], losses
    pm = ray.get([a.train_step.remote(batch) for a in actors])[0]
    assert pm["grad_norm"] > 0
    for a in actors:
        ray.kill(a)


def test_lora_export_is_merged_and_matches_learner(ray_cluster, tiny_model_path):
    import torch
    from transformers import AutoModelForCausalLM

    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.algos.batch import logprobs_from_logits
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig, LoRAConfig
    from iquest_rl.config.model import ModelConfig

    ray = ray_cluster
    cfg = LearnerConfig(num_ranks=2, micro_batch_size=2, lr=5e-2, lora=LoRAConfig(rank=4, alpha=8))
    actors = start_learner_group(ModelConfig(path=tiny_model_path), cfg, GRPOConfig(), group="lora", num_cpus=0.25)
    info = ray.get(actors[0].ping.remote())
    assert info["trainable"] < 0.2 * info["params"]  # only the adapters train
    batch = _batch()
    s0 = ray.get([a.full_state_dict.remote() for a in actors])[0]
    ray.get([a.train_step.remote(batch) for a in actors])
    ray.get([a.train_step.remote(batch) for a in actors])
    s1 = ray.get([a.full_state_dict.remote() for a in actors])[0]
    lp = ray.get([a.compute_logprobs.remote(batch) for a in actors])[0]["logprobs"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    assert set(s1) == set(base.state_dict()), "export names are not the checkpoint's names"
    assert float((s1["model.layers.0.self_attn.q_proj.weight"] - s0["model.layers.0.self_attn.q_proj.weight"]).abs().max()) > 0
    torch.testing.assert_close(s1["model.embed_tokens.weight"], base.state_dict()["model.embed_tokens.weight"])
    base.load_state_dict(s1)
    with torch.no_grad():
        ref = logprobs_from_logits(base(input_ids=batch.input_ids).logits, batch.input_ids)
    assert float((ref - lp).abs().max()) <= 1e-4
    for a in actors:
        ray.kill(a)


def test_kl_reference_is_the_frozen_initial_policy(ray_cluster, tiny_model_path):
    """algo.kl.coef > 0 loads a frozen ZeRO-3 reference: it scores like the policy before any update,
    keeps its logprobs while the policy moves, and the KL term shows in the train metrics."""
    import torch

    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.config.algo import GRPOConfig, KLConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig

    ray = ray_cluster
    cfg = LearnerConfig(num_ranks=2, micro_batch_size=2, lr=5e-2)
    actors = start_learner_group(ModelConfig(path=tiny_model_path), cfg, GRPOConfig(kl=KLConfig(coef=0.5)),
                                 group="kl", num_cpus=0.25)
    batch = _batch()
    policy0 = ray.get([a.compute_logprobs.remote(batch) for a in actors])[0]["logprobs"]
    ref0 = ray.get([a.compute_logprobs.remote(batch, reference=True) for a in actors])[0]["logprobs"]
    assert float((policy0 - ref0).abs().max()) < 1e-6
    batch.ref_logprobs = ref0
    first = ray.get([a.train_step.remote(batch) for a in actors])[0]
    second = ray.get([a.train_step.remote(batch) for a in actors])[0]
    assert first["kl"] < 1e-6 < second["kl"]
    policy2 = ray.get([a.compute_logprobs.remote(batch) for a in actors])[0]["logprobs"]
    ref2 = ray.get([a.compute_logprobs.remote(batch, reference=True) for a in actors])[0]["logprobs"]
    assert float((policy2 - policy0).abs().max()) > 1e-3  # the policy moved ...
    assert torch.equal(ref2, ref0)  # ... the reference did not
    for a in actors:
        ray.kill(a)


def test_no_reference_model_without_kl(ray_cluster, tiny_model_path):
    from ray.exceptions import RayTaskError

    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig

    ray = ray_cluster
    actors = start_learner_group(ModelConfig(path=tiny_model_path), LearnerConfig(num_ranks=1), GRPOConfig(),
                                 group="nokl", num_cpus=0.25)
    with pytest.raises(RayTaskError, match="no reference model"):
        ray.get(actors[0].compute_logprobs.remote(_batch(), reference=True))
    ray.kill(actors[0])
