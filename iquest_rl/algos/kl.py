"""KL-to-reference estimators (Schulman's k1/k2/k3) and the two ways to use them: in the loss or in the reward.

With samples from the current policy π and x = log π_ref − log π per token:
  k1 = −x            (unbiased, high variance, can be negative)
  k2 = ½ x²          (biased, low variance; its gradient is the true KL gradient on-policy)
  k3 = eˣ − 1 − x    (unbiased, always ≥ 0; the GRPO paper's estimator and TRL's)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._masked import masked_sum

# exp() of a log-ratio beyond this overflows float32 long before it means anything.
LOG_RATIO_CLAMP = 20.0


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL(π ‖ π_ref) estimate.  (b,t), (b,t) -> (b,t)

    Gradients flow through `logprobs`; `ref_logprobs` is treated as a constant.
    """
    x = (ref_logprobs.detach() - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x * x
    if estimator == "k3":
        return torch.exp(x) - 1.0 - x
    raise ValueError(f"algo.kl.estimator: unknown estimator {estimator!r} (expected k1, k2 or k3)")


def kl_in_reward(
    rewards: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, coef: float, estimator: str
) -> Tensor:
    """Subtract the KL penalty from rewards (KLConfig.in_reward=True).

    rewards (b,) or (b,t); logprobs, ref_logprobs, mask (b,t) -> same shape as rewards.

    Sequence rewards (b,) lose coef · Σ_t KL_t over the masked tokens; token rewards (b,t) lose
    coef · KL_t at each masked token (the PPO/InstructGPT shaping). No gradient flows: this is reward
    shaping, computed from the rollout (or old) logprobs.
    """
    kl = kl_estimate(logprobs.detach(), ref_logprobs, estimator)
    kl = torch.where(mask.bool(), kl, torch.zeros_like(kl))
    if rewards.dim() == 1:
        return rewards - coef * masked_sum(kl, mask, dim=-1).to(rewards.dtype)
    if rewards.shape != kl.shape:
        raise ValueError(f"kl_in_reward: token rewards {tuple(rewards.shape)} do not match logprobs {tuple(kl.shape)}")
    return rewards - coef * kl.to(rewards.dtype)
