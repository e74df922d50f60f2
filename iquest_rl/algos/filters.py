"""Sample filters and reward shaping that act on whole trajectories before the batch is built.

- zero-variance groups (DAPO dynamic sampling): a group whose rewards are all equal has zero advantage
  and only dilutes the loss normaliser; the controller drops it and samples more.
- overlong responses: a truncated response is not wrong, only unfinished, so either mask it out of the
  loss (DAPO overlong filtering) or shape its reward with DAPO's soft overlong penalty.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nonzero_variance_groups(rewards: Tensor, group_ids: Tensor, atol: float = 0.0) -> Tensor:
    """Keep mask: True for rows whose group's rewards are not all equal (max − min > atol).

    (n,), (n,) -> (n,) bool. A group of one has no variance and is dropped too.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"nonzero_variance_groups: rewards and group_ids must both be (n,), got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    _, inv = torch.unique(group_ids, return_inverse=True)
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.to(torch.float64)
    hi = torch.full((g,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, inv, r, "amax")
    lo = torch.full((g,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, inv, r, "amin")
    return ((hi - lo) > atol)[inv]


def soft_overlong_penalty(lengths: Tensor, max_tokens: int, window: int) -> Tensor:
    """DAPO soft overlong punishment.  (n,) -> (n,) float, in [-1, 0]

    With L = max_tokens and W = window:  0 if len ≤ L − W;  (L − W − len) / W if L − W < len ≤ L;
    −1 if len > L. window=0 gives −1 only beyond L.
    """
    if window < 0 or window > max_tokens:
        raise ValueError(f"algo.overlong_penalty_tokens={window} must be in [0, max_tokens={max_tokens}]")
    lengths = lengths.to(torch.float32)
    start = max_tokens - window
    if window == 0:
        return torch.where(lengths > max_tokens, -1.0, 0.0)
    ramp = (start - lengths) / window
    return torch.where(lengths <= start, torch.zeros_like(lengths), torch.where(lengths <= max_tokens, ramp, -1.0))


def apply_overlong(
    rewards: Tensor, lengths: Tensor, truncated: Tensor, mode: str, max_tokens: int, window: int = 0
) -> tuple[Tensor, Tensor]:
    """Handle overlong responses per GRPOConfig.overlong.  (n,) ×3 -> rewards (n,), keep (n,) bool

    none: rewards unchanged, all kept.  mask: truncated rows get keep=False (their loss mask is zeroed;
    the reward is left for the group baseline).  penalize: window=0 gives a flat −1 added to
    truncated rows; window>0 adds the soft penalty by length to every row.
    """
    keep = torch.ones_like(truncated, dtype=torch.bool)
    truncated = truncated.bool()
    if mode == "none":
        return rewards, keep
    if mode == "mask":
        return rewards, ~truncated
    if mode == "penalize":
        if window == 0:
            return rewards - truncated.to(rewards.dtype), keep
        return rewards + soft_overlong_penalty(lengths, max_tokens, window).to(rewards.dtype), keep
    raise ValueError(f"algo.overlong: unknown mode {mode!r} (expected none, mask or penalize)")
