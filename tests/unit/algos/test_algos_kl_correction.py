"""KL estimators and rollout/learner mismatch correction: hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from iquest_rl.algos.correction import correction_weights
from iquest_rl.algos.kl import kl_estimate, kl_in_reward
from iquest_rl.config.algo import CorrectionConfig


def test_k1_k2_k3_hand_values():
    lp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.2)]])
    x = math.log(0.5)  # log(ref/π) on token 0; token 1 has π = ref
    torch.testing.assert_close(kl_estimate(lp, ref, "k1"), torch.tensor([[-x, 0.0]]))
    torch.testing.assert_close(kl_estimate(lp, ref, "k2"), torch.tensor([[0.5 * x * x, 0.0]]))
    torch.testing.assert_close(kl_estimate(lp, ref, "k3"), torch.tensor([[0.5 - 1 - x, 0.0]]))
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(lp, ref, "k4")


def test_k3_is_unbiased_for_true_kl():
    # samples from π, E[k3] = KL(π ‖ ref); categorical over 4 symbols, exact expectation
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    true_kl = (p * (p / q).log()).sum()
    for est in ("k1", "k3"):
        assert (p * kl_estimate(p.log(), q.log(), est)).sum().item() == pytest.approx(true_kl.item(), rel=1e-5)
    assert (kl_estimate(p.log(), q.log(), "k3") >= 0).all()


def test_kl_gradient_flows_only_through_policy():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], requires_grad=True)
    kl_estimate(lp, ref, "k3").sum().backward()
    # d/dlp (e^{ref−lp} − 1 − (ref − lp)) = 1 − e^{ref−lp}
    torch.testing.assert_close(lp.grad, 1 - torch.exp(ref.detach() - lp.detach()))
    assert ref.grad is None


def test_kl_in_reward_sequence_and_token():
    lp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -0.5, -9.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    k1 = lp - ref  # k1 = log π − log ref
    seq = kl_in_reward(torch.tensor([1.0, 0.0]), lp, ref, mask, 0.1, "k1")
    torch.testing.assert_close(seq, torch.tensor([1.0 - 0.1 * (0.5 - 0.5), 0.0]))
    tok = kl_in_reward(torch.zeros(2, 3), lp, ref, mask, 0.1, "k1")
    torch.testing.assert_close(tok, -0.1 * k1 * mask)
    with pytest.raises(ValueError, match="token rewards"):
        kl_in_reward(torch.zeros(2, 4), lp, ref, mask, 0.1, "k1")


def _mismatch():
    # learner_old − rollout log-ratios: ratios 1, e^{1}≈2.72, 0.4, 1.5, and a masked token
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    rollout = old - torch.tensor([[0.0, 1.0, math.log(0.4), math.log(1.5), 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    return old, rollout, mask


def test_tis_truncates_weights_at_cap():
    old, rollout, mask = _mismatch()
    w, met = correction_weights(old, rollout, mask, CorrectionConfig(mode="tis", cap=2.0))
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, 0.4, 1.5, 0.0]]))
    assert met["correction/clip_frac"].item() == pytest.approx(0.25)
    assert met["correction/weight_mean"].item() == pytest.approx((1 + 2 + 0.4 + 1.5) / 4)
    assert met["mismatch/abs_diff_max"].item() == pytest.approx(1.0)
    assert met["mismatch/ratio_mean"].item() == pytest.approx((1 + math.e + 0.4 + 1.5) / 4)
    lr = torch.tensor([0.0, 1.0, math.log(0.4), math.log(1.5)])
    assert met["mismatch/kl"].item() == pytest.approx((lr.exp() - 1 - lr).mean().item(), rel=1e-6)
    assert met["mismatch/k1"].item() == pytest.approx(-lr.mean().item(), rel=1e-6)


def test_mis_masks_tokens_outside_range():
    old, rollout, mask = _mismatch()
    w, met = correction_weights(old, rollout, mask, CorrectionConfig(mode="mis", cap=2.0, mis_low=0.5))
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]]))
    assert met["correction/clip_frac"].item() == pytest.approx(0.5)


def test_none_and_identical_logprobs():
    old, rollout, mask = _mismatch()
    w, met = correction_weights(old, rollout, mask, CorrectionConfig(mode="none"))
    torch.testing.assert_close(w, mask)
    assert met["mismatch/kl"] > 0
    w, met = correction_weights(old, old.clone(), mask, CorrectionConfig(mode="tis"))
    torch.testing.assert_close(w, mask)
    assert met["mismatch/kl"].item() == 0.0
    w, met = correction_weights(old, rollout, torch.zeros_like(mask), CorrectionConfig(mode="tis"))
    assert torch.equal(w, torch.zeros_like(w)) and all(torch.isfinite(v) for v in met.values())
    with pytest.raises(ValueError, match="shapes differ"):
        correction_weights(old, rollout[:, :2], mask, CorrectionConfig())
