"""Policy/value losses, aggregation modes and entropy: hand-computed values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from iquest_rl.algos.losses import aggregate_loss, entropy_from_logits, policy_loss, ppo_clip_loss, value_loss
from iquest_rl.config.algo import CorrectionConfig, GRPOConfig, KLConfig, PPOConfig

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # row 2 fully masked


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("token-mean", (1 + 2 + 3 + 5) / 4),
        ("seq-mean-token-mean", (2.0 + 5.0 + 0.0) / 3),
        ("seq-mean-token-sum", (6.0 + 5.0 + 0.0) / 3),
        ("seq-mean-token-sum-norm", 11.0 / (3 * 8)),
    ],
)
def test_aggregation_modes_hand_values(mode, expected):
    out = aggregate_loss(VALUES, MASK, mode, norm_tokens=8)
    assert out.item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_masked_entries_are_ignored_even_nan(mode):
    poisoned = VALUES.clone()
    poisoned[0, 3] = float("nan")
    poisoned[2] = float("inf")
    assert aggregate_loss(poisoned, MASK, mode, norm_tokens=8) == aggregate_loss(VALUES, MASK, mode, norm_tokens=8)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batches_sum_to_full_batch(mode):
    torch.manual_seed(1)
    v = torch.randn(6, 5)
    m = (torch.rand(6, 5) > 0.4).float()
    full = aggregate_loss(v, m, mode, norm_tokens=5)
    parts = sum(
        aggregate_loss(v[s], m[s], mode, norm_tokens=5, total_tokens=m.sum().item(), total_seqs=6)
        for s in (slice(0, 2), slice(2, 6))
    )
    torch.testing.assert_close(parts, full)


def test_aggregation_errors():
    with pytest.raises(ValueError, match="loss_norm_tokens"):
        aggregate_loss(VALUES, MASK, "seq-mean-token-sum-norm", norm_tokens=0)
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate_loss(VALUES, MASK, "sum")


def test_fully_masked_batch_is_zero_not_nan():
    for mode in ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]:
        out = aggregate_loss(torch.ones(2, 3), torch.zeros(2, 3), mode, norm_tokens=3)
        assert out.item() == 0.0


# ratio, advantage, expected per-token loss with clip_low .2, clip_high .28 (DAPO clip-higher), dual clip c=2
CASES = [
    (1.5, 1.0, -1.28),  # A>0, r above 1+ε_high: clipped at 1.28
    (0.5, -1.0, 0.8),  # A<0, r below 1−ε_low: clipped at 0.8
    (1.1, 1.0, -1.1),  # inside the trust region
    (3.0, -1.0, 2.0),  # A<0, r ≫ 1: PPO gives 3.0, dual clip bounds it at c·|A| = 2
    (0.5, 1.0, -0.5),  # A>0, r small: the unclipped (pessimistic) branch
    (1.6, -2.0, 3.2),  # A<0, 1.28 < r < c: PPO value, dual clip inactive
]


def _ppo_inputs():
    ratio = torch.tensor([[c[0] for c in CASES]])
    adv = torch.tensor([[c[1] for c in CASES]])
    old = torch.full_like(ratio, -1.0)
    lp = (old + ratio.log()).requires_grad_(True)
    return lp, old, adv, torch.ones_like(ratio)


def test_ppo_clip_dapo_clip_higher_and_dual_clip_hand_values():
    lp, old, adv, mask = _ppo_inputs()
    loss, met = ppo_clip_loss(lp, old, adv, mask, 0.2, 0.28, dual_clip_c=2.0)
    torch.testing.assert_close(loss, torch.tensor([[c[2] for c in CASES]]))
    assert met["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert met["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert met["clip_frac"].item() == pytest.approx(2 / 6)
    assert met["dual_clip_frac"].item() == pytest.approx(1 / 6)
    assert met["ratio_max"].item() == pytest.approx(3.0)
    # gradient: d(−r·A)/d logp = −r·A on unclipped tokens, 0 on clipped ones
    loss.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, 0.0, -1.1, 0.0, -0.5, 3.2]]))


def test_ppo_symmetric_clip_and_no_dual_clip():
    lp, old, adv, mask = _ppo_inputs()
    loss, met = ppo_clip_loss(lp, old, adv, mask, 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.8, -1.1, 3.0, -0.5, 3.2]]))
    assert met["dual_clip_frac"].item() == 0.0
    with pytest.raises(ValueError, match="dual_clip_c"):
        ppo_clip_loss(lp, old, adv, mask, 0.2, 0.2, dual_clip_c=1.0)


def test_gspo_sequence_ratio_value_and_gradient():
    # row log-ratios .1 and .3 on the masked tokens; the masked third token's ratio must not count
    old = torch.zeros(1, 3)
    lp = torch.tensor([[0.1, 0.3, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv = torch.ones(1, 3)
    s = math.exp(0.2)
    loss, met = ppo_clip_loss(lp, old, adv, mask, 0.2, 0.28, ratio_level="sequence")
    torch.testing.assert_close(loss, torch.tensor([[-s, -s, 0.0]]))
    assert met["ratio_mean"].item() == pytest.approx(s)
    aggregate_loss(loss, mask, "token-mean").backward()
    # token-mean of −s over 2 tokens = −s; ds/dlp_t = s/2 for each masked token
    torch.testing.assert_close(lp.grad, torch.tensor([[-s / 2, -s / 2, 0.0]]))
    # outside the clip range the whole sequence is clipped
    loss, met = ppo_clip_loss(torch.tensor([[0.5, 0.7, 0.0]]), old, adv, mask, 3e-4, 4e-4, ratio_level="sequence")
    torch.testing.assert_close(loss, torch.tensor([[-1.0004, -1.0004, 0.0]]))
    assert met["clip_frac_high"].item() == 1.0


def test_value_loss_hand_values():
    v = torch.tensor([[1.0, 2.0, 9.0]], requires_grad=True)
    old = torch.tensor([[0.5, 2.0, 0.0]])
    ret = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # token 0: (1−2)²=1 vs clipped V=0.7 → 1.69, max 1.69; token 1: 1 vs 1
    loss, met = value_loss(v, old, ret, mask, clip=0.2)
    assert loss.item() == pytest.approx((0.5 * 1.69 + 0.5 * 1.0) / 2)
    assert met["vf_clip_frac"].item() == pytest.approx(0.5)
    loss.backward()
    # token 0 takes the clipped branch whose V is at its clip bound (no grad); token 1: (V−R)/2 = 0.5
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, 0.5, 0.0]]))
    plain, _ = value_loss(v, old, ret, mask, clip=0.0)
    assert plain.item() == pytest.approx(0.5)


def test_entropy_from_logits_values_chunking_and_grad():
    assert entropy_from_logits(torch.zeros(2, 8)).tolist() == pytest.approx([math.log(8)] * 2)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert entropy_from_logits(p.log()).item() == pytest.approx(-(p * p.log()).sum().item())
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    ref = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    out = entropy_from_logits(logits, chunk_size=4)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, ref)
    g = torch.randn(3, 5)
    (ga,) = torch.autograd.grad((out * g).sum(), logits)
    (gb,) = torch.autograd.grad((ref * g).sum(), logits)
    torch.testing.assert_close(ga, gb)
    big = torch.tensor([[1e4, 0.0, -1e4]], dtype=torch.bfloat16)
    assert torch.isfinite(entropy_from_logits(big)).all()


def _policy_inputs():
    torch.manual_seed(3)
    lp = (torch.randn(3, 6) * 0.3 - 1.0).requires_grad_(True)
    old = lp.detach() + torch.randn(3, 6) * 0.3
    rollout = old + torch.randn(3, 6) * 0.5
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]], dtype=torch.float32)
    adv = torch.tensor([[1.0], [-0.5], [2.0]]) * mask
    ref = old + torch.randn(3, 6) * 0.2
    ent = torch.rand(3, 6)
    return lp, old, rollout, adv, mask, ref, ent


@pytest.mark.parametrize("mode", ["none", "tis", "mis"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_policy_loss_combines_correction_kl_entropy(mode, agg):
    lp, old, rollout, adv, mask, ref, ent = _policy_inputs()
    cfg = GRPOConfig(
        loss_agg=agg, loss_norm_tokens=6, entropy_coef=0.01, dual_clip_c=3.0,
        kl=KLConfig(coef=0.05, estimator="k3"), correction=CorrectionConfig(mode=mode, cap=2.0, mis_low=0.5),
    )
    loss, met = policy_loss(lp, old, rollout, adv, mask, cfg, ref_logprobs=ref, entropy=ent)
    # independent formula, written out
    r = torch.exp(lp - old)
    pg = torch.maximum(-adv * r, -adv * r.clamp(0.8, 1.28))
    pg = torch.where(adv < 0, torch.minimum(pg, -3.0 * adv), pg)
    iw = torch.exp(old - rollout)
    w = {"none": torch.ones_like(iw), "tis": iw.clamp(max=2.0), "mis": ((iw >= 0.5) & (iw <= 2.0)).float()}[mode]
    x = ref - lp
    k3 = torch.exp(x) - 1 - x
    per_tok = (pg * w + 0.05 * k3) * mask
    if agg == "token-mean":
        agg_val = per_tok.sum() / mask.sum()
    elif agg == "seq-mean-token-mean":
        agg_val = (per_tok.sum(-1) / mask.sum(-1)).mean()
    elif agg == "seq-mean-token-sum":
        agg_val = per_tok.sum(-1).mean()
    else:
        agg_val = per_tok.sum() / (3 * 6)
    expected = agg_val - 0.01 * (ent * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    (g1,) = torch.autograd.grad(loss, lp)
    (g2,) = torch.autograd.grad(expected, lp)
    torch.testing.assert_close(g1, g2)
    assert met["kl"].item() == pytest.approx(((k3 * mask).sum() / mask.sum()).item(), rel=1e-5)
    assert met["correction/weight_mean"].item() == pytest.approx(((w * mask).sum() / mask.sum()).item(), rel=1e-5)
    assert not any(v.requires_grad for v in met.values())


def test_policy_loss_old_none_uses_rollout_and_kl_in_reward_not_in_loss():
    lp, _, rollout, adv, mask, ref, _ = _policy_inputs()
    base = GRPOConfig(clip_low=0.2, clip_high=0.2)
    a, met = policy_loss(lp, None, rollout, adv, mask, base)
    no_corr = base.model_copy(update={"correction": CorrectionConfig(mode="none")})
    b, _ = policy_loss(lp, rollout, rollout, adv, mask, no_corr)
    torch.testing.assert_close(a, b)
    assert met["correction/weight_mean"].item() == 1.0
    in_reward = base.model_copy(update={"kl": KLConfig(coef=0.5, in_reward=True)})
    c, met = policy_loss(lp, None, rollout, adv, mask, in_reward, ref_logprobs=ref)
    torch.testing.assert_close(c, a)
    assert "kl" in met
    d, met = policy_loss(lp, None, rollout, adv, mask, in_reward)  # the reward already holds the KL
    torch.testing.assert_close(d, a)
    assert "kl" not in met


def test_policy_loss_errors_and_ppo_config():
    lp, old, rollout, adv, mask, _, _ = _policy_inputs()
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, old, rollout, adv, mask, GRPOConfig(kl=KLConfig(coef=0.1)))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(lp, old, rollout, adv, mask, GRPOConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="shapes differ"):
        policy_loss(lp, old, rollout, adv[:, :3], mask, GRPOConfig())
    loss, _ = policy_loss(lp, old, rollout, adv, mask, PPOConfig(loss_agg="seq-mean-token-sum-norm"), norm_tokens=6)
    assert torch.isfinite(loss)


def test_policy_loss_fully_masked_sequence_has_no_effect_and_no_nan():
    lp, old, rollout, adv, mask, ref, ent = _policy_inputs()
    mask = mask.clone()
    mask[1] = 0
    lp2 = lp.detach().clone()
    lp2[1] = 1e4  # garbage on the masked row must not reach loss or grads
    lp2.requires_grad_(True)
    cfg = GRPOConfig(kl=KLConfig(coef=0.1), entropy_coef=0.01)
    loss, met = policy_loss(lp2, old, rollout, adv, mask, cfg, ref_logprobs=ref, entropy=ent)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp2.grad).all()
    assert torch.equal(lp2.grad[1], torch.zeros(6))
    assert all(torch.isfinite(v) for v in met.values())
