"""build_batch from token-exact trajectories, logprobs_from_logits' shift convention, token_rewards."""

from __future__ import annotations

import math

import pytest
import torch

from iquest_rl.algos.batch import build_batch, logprobs_from_logits, token_rewards
from iquest_rl.config.algo import GRPOConfig, PPOConfig
from iquest_rl.types import Trajectory, Turn


def _traj(group: int, sampled_lens: list[int], finish: str = "stop", version: int = 3, start: int = 10) -> Trajectory:
    """prompt (2 tokens), then alternating sampled turns and 1-token observations."""
    turns = [Turn([start, start + 1], sampled=False)]
    tok = start + 2
    for i, n in enumerate(sampled_lens):
        if i:
            turns.append(Turn([tok], sampled=False))
            tok += 1
        ids = list(range(tok, tok + n))
        turns.append(Turn(ids, sampled=True, logprobs=[-0.1 * (j + 1) for j in range(n)], policy_version=version + i))
        tok += n
    return Trajectory(task_id=f"t{group}", source="code_tests", turns=turns, finish_reason=finish, group_id=group)


def test_build_batch_grpo_token_exact_padding_and_advantages():
    trajs = [_traj(0, [2, 1]), _traj(0, [1]), _traj(1, [3], version=7), _traj(1, [1], version=1)]
    batch = build_batch(trajs, [1.0, 0.0, 0.0, 0.0], GRPOConfig(scale_std=False), pad_id=0, max_tokens=8)
    assert batch.input_ids.shape == (4, 6)
    assert batch.input_ids[0].tolist() == [10, 11, 12, 13, 14, 15]
    assert batch.input_ids[1].tolist() == [10, 11, 12, 0, 0, 0]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch.loss_mask[0].tolist() == [0, 0, 1, 1, 0, 1]  # observation token 14 masked
    assert batch.loss_mask[1].tolist() == [0, 0, 1, 0, 0, 0]
    torch.testing.assert_close(batch.rollout_logprobs[0], torch.tensor([0, 0, -0.1, -0.2, 0, -0.1]))
    # Dr.GRPO: group 0 rewards [1, 0] -> ±0.5 on sampled tokens only; group 1 all-equal -> 0
    torch.testing.assert_close(batch.advantages[0], 0.5 * batch.loss_mask[0])
    torch.testing.assert_close(batch.advantages[1], -0.5 * batch.loss_mask[1])
    assert torch.equal(batch.advantages[2:], torch.zeros(2, 6))
    assert batch.policy_versions.tolist() == [3, 3, 7, 1]
    torch.testing.assert_close(batch.rewards, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert batch.old_logprobs is None and batch.returns is None


def test_build_batch_scaled_rloo_and_pad_multiple():
    trajs = [_traj(4, [1]), _traj(4, [1]), _traj(4, [1])]
    rloo = GRPOConfig(advantage="rloo", scale_std=False)
    b = build_batch(trajs, torch.tensor([1.0, 0.0, 0.0]), rloo, pad_to_multiple_of=8)
    assert b.input_ids.shape == (3, 8)
    torch.testing.assert_close(b.advantages[:, 2], torch.tensor([1.0, -0.5, -0.5]))
    g = build_batch(trajs, [1.0, 0.0, 0.0], GRPOConfig())
    std = torch.tensor([1.0, 0.0, 0.0]).std()
    torch.testing.assert_close(g.advantages[:, 2], torch.tensor([2 / 3, -1 / 3, -1 / 3]) / (std + 1e-6))


def test_build_batch_overlong_mask_and_penalty():
    trajs = [_traj(0, [2]), _traj(0, [4], finish="length")]
    masked = build_batch(trajs, [0.0, 1.0], GRPOConfig(overlong="mask", scale_std=False))
    assert masked.loss_mask[1].sum() == 0 and masked.advantages[1].abs().sum() == 0
    assert masked.rollout_logprobs[1].abs().sum() == 0
    assert masked.input_ids[1].tolist() == [10, 11, 12, 13, 14, 15]  # ids kept, only the loss is masked
    torch.testing.assert_close(masked.advantages[0, 2:4], torch.tensor([-0.5, -0.5]))
    flat = build_batch(trajs, [0.0, 1.0], GRPOConfig(overlong="penalize", scale_std=False))
    torch.testing.assert_close(flat.rewards, torch.tensor([0.0, 0.0]))
    soft = build_batch(trajs, [0.0, 1.0], GRPOConfig(overlong="penalize", overlong_penalty_tokens=2), max_tokens=4)
    torch.testing.assert_close(soft.rewards, torch.tensor([0.0, 0.0]))  # len 4 == L → −1
    with pytest.raises(ValueError, match="max_tokens"):
        build_batch(trajs, [0.0, 1.0], GRPOConfig(overlong="penalize", overlong_penalty_tokens=2))


def test_build_batch_ppo_leaves_advantages_to_the_learner():
    b = build_batch([_traj(0, [2]), _traj(1, [1])], [1.0, 0.5], PPOConfig(overlong="none"))
    assert torch.equal(b.advantages, torch.zeros_like(b.advantages))
    tr = token_rewards(b.rewards, b.loss_mask)
    assert tr[0].tolist() == [0, 0, 0, 1.0] and tr[1].tolist() == [0, 0, 0.5, 0]


def test_build_batch_errors():
    with pytest.raises(ValueError, match="rewards has shape"):
        build_batch([_traj(0, [1])], [1.0, 2.0], GRPOConfig())
    bad = Trajectory("x", "s", [Turn([1, 2], sampled=True, logprobs=[-1.0, -1.0])])
    with pytest.raises(ValueError, match="row 0 .*starts with a sampled token"):
        build_batch([bad], [1.0], GRPOConfig())
    with pytest.raises(ValueError, match="no trajectories"):
        build_batch([], [], GRPOConfig())


def test_token_rewards_empty_row():
    assert token_rewards(torch.tensor([2.0, 3.0]), torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])).tolist() == [
        [0, 0, 2.0, 0], [0, 0, 0, 0]]


def test_logprobs_from_logits_shift_hand_values():
    # vocab 3; logits at position t score token t+1
    logits = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[1, 2, 0]])
    out = logprobs_from_logits(logits, ids)
    torch.testing.assert_close(out, torch.tensor([[0.0, math.log(0.5), math.log(0.6)]]))
    hot = logprobs_from_logits(logits, ids, temperature=2.0)
    p = torch.tensor([0.2, 0.3, 0.5]).sqrt()
    assert hot[0, 1].item() == pytest.approx(math.log(p[2] / p.sum()), rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        logprobs_from_logits(logits, ids[:, :2])


def test_logprobs_from_logits_matches_transformers_causal_lm_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=17, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 17, (3, 7))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    lp = logprobs_from_logits(out.logits, ids, chunk_tokens=5)
    # transformers shifts labels internally; its mean NLL over positions 1.. must equal ours
    assert (-lp[:, 1:].mean()).item() == pytest.approx(out.loss.item(), rel=1e-5)
    bf = logprobs_from_logits(out.logits.bfloat16(), ids)
    assert bf.dtype == torch.float32 and (bf - lp).abs().max() < 0.1


def test_logprobs_from_logits_chunks_give_the_plain_values_and_gradients():
    torch.manual_seed(1)
    logits = torch.randn(3, 9, 11, requires_grad=True)
    ids = torch.randint(0, 11, (3, 9))
    w = torch.randn(3, 9)
    plain = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    (plain * w[:, 1:]).sum().backward()
    want = logits.grad.clone()
    logits.grad = None
    lp = logprobs_from_logits(logits, ids, temperature=0.7, chunk_tokens=4)  # chunks cross row ends
    torch.testing.assert_close(lp[:, 1:], plain.detach())
    assert bool((lp[:, 0] == 0).all())
    (lp * w).sum().backward()
    torch.testing.assert_close(logits.grad, want)


def test_grpo_kl_in_reward_penalises_rewards_and_recomputes_group_advantages():
    from iquest_rl.algos.batch import grpo_kl_in_reward
    from iquest_rl.config.algo import KLConfig

    cfg = GRPOConfig(kl=KLConfig(coef=0.5, estimator="k1", in_reward=True), scale_std=False)
    trajs = [_traj(0, [2]), _traj(0, [2]), _traj(1, [1]), _traj(1, [1])]
    batch = build_batch(trajs, [1.0, 1.0, 0.0, 1.0], cfg)
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    # Reference logprobs 0.2 below the rollout's on row 0's two sampled tokens only: k1 = log π - log ref.
    batch.ref_logprobs = batch.rollout_logprobs.clone()
    batch.ref_logprobs[0] -= 0.2 * batch.loss_mask[0]
    m = grpo_kl_in_reward(batch, cfg)
    assert batch.rewards.tolist() == pytest.approx([1.0 - 0.5 * 0.4, 1.0, 0.0, 1.0])
    # Group 0 had no signal before the penalty; now its first sample is worse than its second.
    adv = (batch.advantages * batch.loss_mask).sum(1) / batch.loss_mask.sum(1)
    assert adv.tolist() == pytest.approx([-0.1, 0.1, -0.5, 0.5])
    assert m["kl/reward_penalty_mean"] == pytest.approx(0.05)
    batch.ref_logprobs = None
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_kl_in_reward(batch, cfg)
