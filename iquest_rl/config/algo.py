"""RL algorithm blocks: GRPO (with Dr.GRPO/DAPO/GSPO options) and PPO with a critic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


class KLConfig(StrictModel):
    coef: float = Field(0.0, ge=0)
    """KL-to-reference coefficient; 0 = off and no reference model is loaded (the IQuest recipe)."""
    estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (Schulman's k1/k2/k3)."""
    in_reward: bool = False
    """Subtract KL from the reward instead of adding it to the loss."""


class CorrectionConfig(StrictModel):
    """Rollout/learner mismatch correction from vLLM's logprobs versus the learner's."""

    mode: Literal["none", "tis", "mis"] = "tis"
    """tis = truncated importance weights; mis = mask tokens whose ratio is out of range."""
    cap: float = Field(2.0, gt=0)
    """TIS cap on the importance weight / MIS upper ratio bound."""
    mis_low: float = Field(0.5, gt=0)
    """MIS lower ratio bound."""


class _PolicyLoss(StrictModel):
    clip_low: float = Field(0.2, ge=0)
    """Lower PPO ratio clip ε_low."""
    clip_high: float = Field(0.28, ge=0)
    """Upper ratio clip ε_high (DAPO clip-higher); equal to clip_low gives symmetric PPO clipping."""
    dual_clip_c: float | None = Field(None, gt=1.0)
    """Dual-clip constant c (> 1) bounding the loss for negative advantages; None = off."""
    ratio_level: Literal["token", "sequence"] = "token"
    """token = PPO/GRPO ratio per token; sequence = GSPO length-normalised sequence ratio."""
    loss_agg: LossAgg = "token-mean"
    """Loss aggregation; seq-mean-token-sum-norm divides by a constant (Dr.GRPO)."""
    loss_norm_tokens: int = Field(0, ge=0)
    """Constant normaliser for seq-mean-token-sum-norm; 0 = the rollout max_tokens."""
    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus coefficient; 0 = off."""
    kl: KLConfig = KLConfig()
    """KL to the reference policy."""
    correction: CorrectionConfig = CorrectionConfig()
    """Rollout/learner logprob mismatch correction."""
    filter_zero_variance: bool = True
    """Drop groups whose rewards are all equal (DAPO dynamic sampling) and refill the batch."""
    overlong: Literal["none", "mask", "penalize"] = "mask"
    """Truncated responses: keep, mask out of the loss, or apply the soft overlong penalty."""
    overlong_penalty_tokens: int = Field(0, ge=0)
    """Soft overlong penalty window in tokens (DAPO); 0 = a flat -1 reward when truncated."""


class GRPOConfig(_PolicyLoss):
    name: Literal["grpo"] = "grpo"
    """Algorithm tag."""
    group_size: int = Field(16, ge=2)
    """Completions sampled per task; advantages are centred within each group."""
    advantage: Literal["grpo", "rloo"] = "grpo"
    """Group baseline: mean of the group (grpo) or leave-one-out mean (rloo)."""
    scale_std: bool = True
    """Divide advantages by the group std; False = Dr.GRPO."""


class PPOConfig(_PolicyLoss):
    name: Literal["ppo"] = "ppo"
    """Algorithm tag."""
    group_size: int = Field(1, ge=1)
    """Completions sampled per task."""
    gamma: float = Field(1.0, ge=0, le=1)
    """GAE discount γ."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE λ."""
    value_clip: float = Field(0.2, ge=0)
    """Value-loss clipping range; 0 = unclipped."""
    value_coef: float = Field(0.5, ge=0)
    """Weight of the value loss in the critic update."""
    critic_lr: float = Field(5e-6, gt=0)
    """Critic learning rate."""
