"""Advantage estimators: hand-computed values, published formulas, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from iquest_rl.algos.advantages import gae, group_advantages, rloo_advantages, sequence_advantages, whiten


def test_grpo_group_advantages_hand_values():
    # group 0: [1, 0, 1, 0] mean .5, unbiased std sqrt(1/3); group 1: [2, 4] mean 3, std sqrt(2)
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 4.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    a = group_advantages(r, g, scale=True, eps=0.0)
    s0, s1 = math.sqrt(1 / 3), math.sqrt(2)
    expected = torch.tensor([0.5 / s0, -0.5 / s0, 0.5 / s0, -0.5 / s0, -1 / s1, 1 / s1])
    torch.testing.assert_close(a, expected)


def test_dr_grpo_no_std_scaling():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 4.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    torch.testing.assert_close(group_advantages(r, g, scale=False), torch.tensor([0.5, -0.5, 0.5, -0.5, -1.0, 1.0]))


def test_group_ids_need_not_be_contiguous_or_sorted():
    r = torch.tensor([1.0, 5.0, 0.0, 7.0])
    g = torch.tensor([42, 3, 42, 3])
    torch.testing.assert_close(group_advantages(r, g, scale=False), torch.tensor([0.5, -1.0, -0.5, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.0, 0.1, 1.0, 1e6 + 0.1, -3.3])
@pytest.mark.parametrize("fn", [group_advantages, rloo_advantages])
def test_all_equal_group_gives_exact_zero(fn, value, dtype):
    # float64 0.1·3/3 != 0.1: the residue must not be blown up by the (tiny) std
    r = torch.tensor([value] * 3 + [1.0, 0.0], dtype=dtype)
    g = torch.tensor([0, 0, 0, 1, 1])
    a = fn(r, g, scale=True)
    assert torch.isfinite(a).all()
    assert torch.equal(a[:3], torch.zeros(3))
    assert a[3] > 0 > a[4]


def test_group_of_one_is_zero_not_nan():
    a = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 1, 1]), scale=True)
    assert a[0] == 0 and torch.isfinite(a).all()
    assert rloo_advantages(torch.tensor([3.0]), torch.tensor([0]))[0] == 0


def test_rloo_hand_values_and_identity():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    g = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(rloo_advantages(r, g), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    # RLOO = k/(k-1) · (r − mean): a rescaled GRPO/Dr.GRPO advantage
    r = torch.tensor([0.3, 0.9, 0.1, 0.5, 2.0, -1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    k = torch.tensor([4, 4, 4, 4, 2, 2.0])
    torch.testing.assert_close(rloo_advantages(r, g), k / (k - 1) * group_advantages(r, g, scale=False))


def test_rloo_scaled_divides_by_group_std():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    g = torch.zeros(4, dtype=torch.long)
    std = r.std()  # unbiased
    torch.testing.assert_close(rloo_advantages(r, g, scale=True, eps=0.0), rloo_advantages(r, g) / std)


def test_sequence_advantages_dispatch_and_errors():
    r, g = torch.tensor([1.0, 0.0]), torch.tensor([0, 0])
    torch.testing.assert_close(sequence_advantages(r, g, "grpo", False), torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(sequence_advantages(r, g, "rloo", False), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="unknown estimator"):
        sequence_advantages(r, g, "ppo", False)
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), g, True)
    with pytest.raises(ValueError, match=r"\(n,\)"):
        group_advantages(torch.ones(2, 2), torch.zeros(2, 2), True)


def _gae_reference(rewards, values, mask, gamma, lam):
    """Slow loop: compress each row to its masked steps, run the textbook recursion backwards."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[b, t]]
        last, next_v = 0.0, 0.0
        for t in reversed(steps):
            delta = float(rewards[b, t]) + gamma * next_v - float(values[b, t])
            last = delta + gamma * lam * last
            adv[b, t] = last
            next_v = float(values[b, t])
    return adv, (adv + values) * mask


def test_gae_hand_values():
    # 3 steps, γ=0.9, λ=0.5: δ2 = 1 − 0.3 = 0.7; δ1 = 0 + .9·.3 − .2 = .07; δ0 = 0 + .9·.2 − .1 = .08
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.1, 0.2, 0.3]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=0.9, lam=0.5)
    a2 = 0.7
    a1 = 0.07 + 0.45 * a2
    a0 = 0.08 + 0.45 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2]]))
    torch.testing.assert_close(ret, adv + v)


def test_gae_gamma_lambda_one_is_return_minus_value():
    r = torch.tensor([[0.0, 0.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, -1.0, 3.0]])
    adv, ret = gae(r, v, torch.ones(1, 4), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, 2.0 - v)
    torch.testing.assert_close(ret, torch.full((1, 4), 2.0))


def test_gae_matches_slow_reference_with_gaps_and_empty_rows():
    torch.manual_seed(0)
    r, v = torch.randn(4, 9), torch.randn(4, 9)
    mask = (torch.rand(4, 9) > 0.35).float()
    mask[0, 0] = 0
    mask[2] = 0  # fully masked row
    for gamma, lam in [(1.0, 0.95), (0.99, 0.9), (0.5, 0.0), (0.0, 1.0)]:
        adv, ret = gae(r, v, mask, gamma, lam)
        ref_adv, ref_ret = _gae_reference(r, v, mask, gamma, lam)
        torch.testing.assert_close(adv, ref_adv)
        torch.testing.assert_close(ret, ref_ret)
    assert torch.equal(adv[2], torch.zeros(9))
    assert torch.equal(adv * (1 - mask), torch.zeros_like(adv))


def test_gae_skips_masked_observation_tokens():
    # sampled, observation (masked, garbage reward/value), sampled: same as the two sampled steps alone
    r = torch.tensor([[0.0, 99.0, 1.0]])
    v = torch.tensor([[0.4, -50.0, 0.6]])
    adv, _ = gae(r, v, torch.tensor([[1.0, 0.0, 1.0]]), gamma=0.9, lam=0.8)
    adv2, _ = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.4, 0.6]]), torch.ones(1, 2), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv[:, [0, 2]], adv2)
    assert adv[0, 1] == 0


def test_whiten_hand_values_and_mask():
    x = torch.tensor([2.0, 4.0, 6.0, 100.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])  # mean 4, unbiased var 4
    torch.testing.assert_close(whiten(x, m, eps=0.0), torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(whiten(x, m, shift_mean=False, eps=0.0), torch.tensor([3.0, 4.0, 5.0, 0.0]))
    one = whiten(torch.tensor([5.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert torch.equal(one, torch.zeros(2))
    assert torch.equal(whiten(torch.tensor([5.0]), torch.tensor([0.0])), torch.zeros(1))
