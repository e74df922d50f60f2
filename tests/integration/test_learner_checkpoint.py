"""Resume: save at step k, start NEW learner processes from the checkpoint, take step k+1 -> the same
parameters as the run that never stopped (2 ZeRO-3 ranks over gloo, optimiser state included).
The checkpoint's HF export loads in transformers with the step-k weights."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.deepspeed, pytest.mark.ray]


def _batch(seed: int):
    import torch

    from iquest_rl.types import TrainBatch

    g = torch.Generator().manual_seed(seed)
    n, t = 4, 12
    ids = torch.randint(3, 1000, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    am[1, 7:] = 0
    lm = am.float().clone()
    lm[:, :3] = 0
    adv = torch.randn(n, 1, generator=g) * lm
    return TrainBatch(input_ids=ids * am, attention_mask=am, loss_mask=lm, advantages=adv,
                      rollout_logprobs=-7.0 * lm)


def _start(tiny_model_path, group):
    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig

    # warm-up keeps the LR schedule in play: a resume that lost the scheduler state would differ
    cfg = LearnerConfig(num_ranks=2, micro_batch_size=1, grad_accum=2, lr=1e-2, warmup_steps=3)
    return start_learner_group(ModelConfig(path=tiny_model_path), cfg, GRPOConfig(), group=group, num_cpus=0.25)


def test_resume_matches_uninterrupted_run(ray_cluster, tiny_model_path, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from iquest_rl import checkpoint

    ray = ray_cluster
    run = _start(tiny_model_path, "ckpt-a")
    ray.get([a.train_step.remote(_batch(0)) for a in run])
    ray.get([a.train_step.remote(_batch(1)) for a in run])
    after_k = ray.get([a.full_state_dict.remote() for a in run])[0]
    ckpt = checkpoint.save(tmp_path, 2, {"step": 2, "cursor": 8},
                           write_learner=lambda d: ray.get([a.save_checkpoint.remote(str(d)) for a in run]))
    m_cont = ray.get([a.train_step.remote(_batch(2)) for a in run])[0]
    continued = ray.get([a.full_state_dict.remote() for a in run])[0]
    for a in run:
        ray.kill(a)

    assert checkpoint.latest(tmp_path) == ckpt
    hf = AutoModelForCausalLM.from_pretrained(ckpt / "hf", dtype=torch.float32).state_dict()
    for n, t in after_k.items():
        assert torch.equal(hf[n], t), f"HF export differs at {n}"

    resumed = _start(tiny_model_path, "ckpt-b")
    ray.get([a.load_checkpoint.remote(str(ckpt)) for a in resumed])
    assert checkpoint.restore(ckpt) == {"step": 2, "cursor": 8}
    loaded = ray.get([a.full_state_dict.remote() for a in resumed])[0]
    for n, t in after_k.items():
        assert torch.equal(loaded[n], t), f"restored weights differ at {n}"
    m_res = ray.get([a.train_step.remote(_batch(2)) for a in resumed])[0]
    after = ray.get([a.full_state_dict.remote() for a in resumed])[0]
    assert m_res["lr"] == m_cont["lr"] and m_res["lr"] < 1e-2  # still warming up: scheduler restored
    for n, t in continued.items():
        assert not torch.equal(t, after_k[n]) or n.endswith("norm.weight"), f"{n} did not move"
        torch.testing.assert_close(after[n], t, rtol=0, atol=0, msg=f"step k+1 after resume differs at {n}")
    for a in resumed:
        ray.kill(a)
