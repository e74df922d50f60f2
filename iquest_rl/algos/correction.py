"""Rollout/learner mismatch correction: vLLM's sampling logprobs differ from the learner's (kernels, precision,
stale weights), so the PPO ratio's denominator is not the distribution the tokens came from.

Both modes give a per-token weight w (no gradient) that multiplies the per-token policy loss:
  tis: w = min(exp(learner_old_lp − rollout_lp), cap)                 truncated importance sampling
  mis: w = 1 if mis_low ≤ exp(learner_old_lp − rollout_lp) ≤ cap else 0   masked importance sampling
The masked tokens stay in the loss normaliser (as in TRL's token_mask), so masking never re-weights
the other tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iquest_rl.config.algo import CorrectionConfig

from ._masked import masked_max, masked_mean
from .kl import LOG_RATIO_CLAMP


def correction_weights(
    old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor, cfg: CorrectionConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token correction weights and mismatch metrics.  (b,t) ×3 -> weights (b,t), metrics

    weights are 0 at masked positions and detached. Metrics (0-d tensors, over masked tokens):
      mismatch/kl          k3 estimate of KL(rollout ‖ learner), ≈ ½ E[(Δ log p)²] for small gaps
      mismatch/k1          mean of rollout_lp − learner_old_lp
      mismatch/abs_diff_max  largest |learner_old_lp − rollout_lp|
      mismatch/ratio_mean  mean importance ratio before truncation/masking
      correction/clip_frac fraction of tokens whose ratio exceeded the cap (tis) or left the range (mis)
      correction/weight_mean mean weight applied
    """
    if not (old_logprobs.shape == rollout_logprobs.shape == mask.shape):
        raise ValueError(
            f"correction_weights: shapes differ: old {tuple(old_logprobs.shape)}, rollout "
            f"{tuple(rollout_logprobs.shape)}, mask {tuple(mask.shape)}"
        )
    m = mask.bool()
    log_ratio = (old_logprobs.detach() - rollout_logprobs.detach()).float()
    log_ratio = torch.where(m, log_ratio, torch.zeros_like(log_ratio)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    if cfg.mode == "none":
        weights = torch.ones_like(ratio)
        outside = torch.zeros_like(m)
    elif cfg.mode == "tis":
        weights = ratio.clamp(max=cfg.cap)
        outside = ratio > cfg.cap
    elif cfg.mode == "mis":
        outside = (ratio < cfg.mis_low) | (ratio > cfg.cap)
        weights = (~outside).to(ratio.dtype)
    else:
        raise ValueError(f"algo.correction.mode: unknown mode {cfg.mode!r}")
    weights = torch.where(m, weights, torch.zeros_like(weights))
    metrics = {
        # samples come from the rollout policy, so k3 with x = log(learner/rollout) estimates KL(rollout ‖ learner)
        "mismatch/kl": masked_mean(torch.exp(log_ratio) - 1.0 - log_ratio, m),
        "mismatch/k1": masked_mean(-log_ratio, m),
        "mismatch/abs_diff_max": masked_max(log_ratio.abs(), m),
        "mismatch/ratio_mean": masked_mean(ratio, m),
        "correction/clip_frac": masked_mean(outside.float(), m),
        "correction/weight_mean": masked_mean(weights, m),
    }
    return weights, metrics
