"""Advantage estimators: GRPO group baseline (Dr.GRPO without std scaling), RLOO, GAE, whitening.

Sequence-level estimators map one scalar reward per trajectory to one advantage per trajectory;
`batch.build_batch` broadcasts it onto the sampled tokens. GAE works on token-level rewards and values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._masked import masked_mean, masked_sum


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-element group sum, count, and whether the group's rewards are all equal.  (n,), (n,) -> 4 × (n,)

    Returns (inverse index, group sum, group count, all_equal) gathered back to each element.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"advantages: rewards and group_ids must both be (n,), got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    if not torch.isfinite(rewards).all():
        bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(f"advantages: rewards contain NaN/inf at rows {bad}")
    _, inv = torch.unique(group_ids, return_inverse=True)
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.to(torch.float64)  # exact enough that all-equal groups give exactly zero below
    total = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, r)
    count = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, torch.ones_like(r))
    hi = torch.full((g,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, inv, r, "amax")
    lo = torch.full((g,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, inv, r, "amin")
    return inv, total[inv], count[inv], (hi == lo)[inv]


def _group_std(rewards: Tensor, inv: Tensor, mean: Tensor, count: Tensor) -> Tensor:
    """Unbiased (Bessel) group std gathered to each element; 0 for groups of one.  -> (n,)"""
    r = rewards.to(torch.float64)
    g = int(inv.max()) + 1 if inv.numel() else 0
    sq = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, (r - mean) ** 2)[inv]
    return torch.sqrt(sq / (count - 1).clamp(min=1.0))


def group_advantages(rewards: Tensor, group_ids: Tensor, scale: bool, eps: float = 1e-6) -> Tensor:
    """GRPO advantages: reward minus its group mean, divided by the group std when `scale`.  (n,), (n,) -> (n,)

    scale=False is Dr.GRPO (no std division, which over-weights easy/hard groups). The std is the
    unbiased one (as in TRL and verl). Groups whose rewards are all equal, and groups of one, get
    exactly 0 (never NaN and never a rounding residue blown up by a tiny std).
    """
    inv, total, count, all_equal = _group_stats(rewards, group_ids)
    mean = total / count
    adv = rewards.to(torch.float64) - mean
    if scale:
        adv = adv / (_group_std(rewards, inv, mean, count) + eps)
    adv = torch.where(all_equal, torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def rloo_advantages(rewards: Tensor, group_ids: Tensor, scale: bool = False, eps: float = 1e-6) -> Tensor:
    """RLOO: reward minus the mean of the other rewards in its group.  (n,), (n,) -> (n,)

    A_i = r_i - (Σ_j r_j - r_i) / (k - 1) = k/(k-1) · (r_i - mean). Groups of one and all-equal groups
    get 0. With `scale`, the result is divided by the group std of the rewards (plus eps).
    """
    inv, total, count, all_equal = _group_stats(rewards, group_ids)
    r = rewards.to(torch.float64)
    adv = r - (total - r) / (count - 1).clamp(min=1.0)
    if scale:
        adv = adv / (_group_std(rewards, inv, total / count, count) + eps)
    adv = torch.where(all_equal | (count < 2), torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def sequence_advantages(rewards: Tensor, group_ids: Tensor, estimator: str, scale: bool, eps: float = 1e-6) -> Tensor:
    """Dispatch on GRPOConfig.advantage ("grpo" or "rloo").  (n,), (n,) -> (n,)"""
    if estimator == "grpo":
        return group_advantages(rewards, group_ids, scale, eps)
    if estimator == "rloo":
        return rloo_advantages(rewards, group_ids, scale, eps)
    raise ValueError(f"algo.advantage: unknown estimator {estimator!r} (expected 'grpo' or 'rloo')")


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the masked tokens.  (b,t) ×3 -> advantages (b,t), returns (b,t)

    Only positions with mask=1 are steps of the MDP: masked positions in between (tool observations,
    template tokens) are skipped, so the step after a sampled token is the next sampled token, and
    the value after the last sampled token is 0 (terminal). Rewards and values at masked positions
    are ignored. δ_t = r_t + γ V_next − V_t;  A_t = δ_t + γλ A_next;  returns = A + V. Both outputs
    are 0 at masked positions.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(
            f"gae: rewards, values and mask must share one (b,t) shape, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    r = rewards.detach().float()
    v = values.detach().float()
    next_value = torch.zeros_like(r[:, 0])
    last_gae = torch.zeros_like(r[:, 0])
    adv = torch.zeros_like(r)
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        step = delta + gamma * lam * last_gae
        adv[:, t] = torch.where(m[:, t], step, torch.zeros_like(step))
        # carry the recursion state through masked positions unchanged
        last_gae = torch.where(m[:, t], step, last_gae)
        next_value = torch.where(m[:, t], v[:, t], next_value)
    returns = torch.where(m, adv + v, torch.zeros_like(adv))
    return adv, returns


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise x to unit variance (and zero mean when shift_mean) over the masked entries.  (...) -> (...)

    Uses the unbiased masked variance; masked entries come back as 0. With fewer than two masked
    entries there is no spread to estimate, so x is only centred (or returned masked).
    """
    m = mask.bool()
    n = m.sum()
    mean = masked_mean(x, m)
    centred = x - mean
    if n < 2:
        out = centred if shift_mean else x
    else:
        var = masked_sum(centred**2, m) / (n - 1)
        out = centred * torch.rsqrt(var + eps)
        if not shift_mean:
            out = out + mean
    return torch.where(m, out, torch.zeros_like(out))
