"""Policy and value losses: PPO clipping (DAPO clip-higher, dual clip, GSPO sequence ratio), loss aggregation,
entropy, and `policy_loss`, which combines them as the algorithm config says.

All token tensors are (b,t) and aligned with input_ids; `mask` is the loss mask (1 on sampled tokens).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from iquest_rl.config.algo import GRPOConfig, PPOConfig

from ._masked import masked_max, masked_mean, masked_sum
from .correction import correction_weights
from .kl import LOG_RATIO_CLAMP, kl_estimate

PolicyLossConfig = GRPOConfig | PPOConfig


def aggregate_loss(
    values: Tensor,
    mask: Tensor,
    mode: str,
    norm_tokens: int = 0,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> Tensor:
    """Reduce a per-token loss to a scalar.  (b,t), (b,t) -> ()

    token-mean               Σ l·m / Σ m                      (DAPO; TRL "bnpo"/"dapo")
    seq-mean-token-mean      1/B Σ_s (Σ_t l·m / Σ_t m)        (GRPO paper; TRL "grpo")
    seq-mean-token-sum       1/B Σ_s Σ_t l·m
    seq-mean-token-sum-norm  Σ l·m / (B · norm_tokens)        (Dr.GRPO constant normaliser; TRL "dr_grpo")
    B counts every row, fully masked ones included (they add 0), so masking a row never re-weights the
    others. For micro-batches of a larger batch, pass total_tokens / total_seqs of the whole batch so
    that summing the micro-batch losses gives the full-batch loss.
    """
    m = mask.to(values.dtype)
    if mode == "token-mean":
        denom = total_tokens if total_tokens is not None else m.sum().clamp(min=1.0)
        return masked_sum(values, m) / denom
    seqs = total_seqs if total_seqs is not None else float(values.shape[0])
    if mode == "seq-mean-token-mean":
        per_seq = masked_sum(values, m, dim=-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum() / seqs
    if mode == "seq-mean-token-sum":
        return masked_sum(values, m) / seqs
    if mode == "seq-mean-token-sum-norm":
        if norm_tokens <= 0:
            raise ValueError(
                "algo.loss_norm_tokens must be > 0 for seq-mean-token-sum-norm (resolve 0 to the rollout max_tokens)"
            )
        return masked_sum(values, m) / (seqs * norm_tokens)
    raise ValueError(f"algo.loss_agg: unknown mode {mode!r}")


def log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, level: str) -> Tensor:
    """log(π/π_old) per token, or GSPO's length-normalised sequence log-ratio broadcast.  (b,t) ×3 -> (b,t)

    sequence: s = (1/|y|) Σ_t m_t (log π − log π_old), the same value at every token of the row (GSPO);
    its gradient reaches every token of the sequence. Clamped to ±20 so exp() cannot overflow.
    """
    lr = logprobs - old_logprobs.detach()
    lr = torch.where(mask.bool(), lr, torch.zeros_like(lr))
    if level == "sequence":
        lr = (masked_sum(lr, mask, dim=-1) / mask.to(lr.dtype).sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(lr)
    elif level != "token":
        raise ValueError(f"algo.ratio_level: unknown level {level!r} (expected token or sequence)")
    return lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None = None,
    ratio_level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token PPO clipped surrogate loss.  (b,t) ×4 -> loss (b,t), metrics

    loss = −min(r·A, clip(r, 1−clip_low, 1+clip_high)·A); clip_high > clip_low is DAPO clip-higher.
    Dual clip (Ye et al. 2020), for A < 0 only: loss = min(that, −c·A), bounding the loss when r ≫ 1.
    r is per token, or GSPO's sequence ratio (ratio_level="sequence"). The loss is 0 at masked positions.
    Metrics (0-d, over masked tokens): clip_frac_low (r < 1−ε_low and A < 0), clip_frac_high
    (r > 1+ε_high and A > 0), clip_frac (either: the clipped branch is active), dual_clip_frac
    (A < 0 and r > c), ratio_mean, ratio_max, approx_kl (k3 of π_old ‖ π).
    """
    m = mask.bool()
    lr = log_ratio(logprobs, old_logprobs, mask, ratio_level)
    ratio = torch.exp(lr)
    adv = advantages.detach()
    surr1 = -adv * ratio
    surr2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(surr1, surr2)
    dual = torch.zeros_like(m)
    if dual_clip_c is not None:
        if dual_clip_c <= 1.0:
            raise ValueError(f"algo.dual_clip_c={dual_clip_c} must be > 1")
        bound = -adv * dual_clip_c
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
    loss = torch.where(m, loss, torch.zeros_like(loss))
    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (adv < 0)
        high = (ratio > 1.0 + clip_high) & (adv > 0)
        metrics = {
            "clip_frac_low": masked_mean(low.float(), m),
            "clip_frac_high": masked_mean(high.float(), m),
            "clip_frac": masked_mean((low | high).float(), m),
            "dual_clip_frac": masked_mean(dual.float(), m),
            "ratio_mean": masked_mean(ratio, m),
            "ratio_max": masked_max(ratio, m),
            "approx_kl": masked_mean(torch.exp(-lr) - 1.0 + lr, m),
        }
    return loss, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float,
    agg: str = "token-mean",
    norm_tokens: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss.  (b,t) ×4 -> (), metrics

    ½·max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²) per token (PPO2), aggregated with `agg`;
    clip=0 gives the plain ½(V − R)². Metrics: vf_clip_frac (tokens where the clipped branch is larger),
    vf_explained_var (1 − Var(R − V)/Var(R) over masked tokens).
    """
    m = mask.bool()
    ret = returns.detach()
    err = (values - ret) ** 2
    clipped_frac = torch.zeros((), device=values.device)
    if clip > 0:
        v_clip = old_values.detach() + (values - old_values.detach()).clamp(-clip, clip)
        err_clip = (v_clip - ret) ** 2
        with torch.no_grad():
            clipped_frac = masked_mean((err_clip > err).float(), m)
        err = torch.maximum(err, err_clip)
    loss = aggregate_loss(0.5 * err, m, agg, norm_tokens)
    with torch.no_grad():
        resid = ret - values
        var_r = masked_mean((ret - masked_mean(ret, m)) ** 2, m)
        var_e = masked_mean((resid - masked_mean(resid, m)) ** 2, m)
        explained = 1.0 - var_e / var_r.clamp(min=1e-8)
    return loss, {"vf_clip_frac": clipped_frac, "vf_explained_var": explained}


def _entropy_chunk(logits: Tensor) -> Tensor:
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1, keepdim=True)
    p = torch.exp(logits - logz)
    return logz.squeeze(-1) - (p * logits).sum(-1)


def entropy_from_logits(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last axis.  (..., V) -> (...)

    Computed in float32 over chunks of `chunk_size` rows so the softmax of a (b·t, V) tensor is never
    whole in memory at once; with gradients on, each chunk is recomputed in backward (activation
    checkpointing) instead of keeping its softmax alive.
    """
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    outs = []
    for chunk in flat.split(chunk_size, dim=0):
        if chunk.requires_grad and torch.is_grad_enabled():
            outs.append(checkpoint(_entropy_chunk, chunk, use_reentrant=False))
        else:
            outs.append(_entropy_chunk(chunk))
    if not outs:
        return flat.new_zeros(shape, dtype=torch.float32)
    return torch.cat(outs).reshape(shape)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    rollout_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: PolicyLossConfig,
    ref_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    norm_tokens: int | None = None,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The actor loss for one (micro-)batch as `cfg` (GRPOConfig or PPOConfig) says.  (b,t) ×5 -> (), metrics

    logprobs: learner logprobs with gradient. old_logprobs: learner logprobs before this update (the
    PPO ratio's denominator); None uses rollout_logprobs (and the correction is then the identity).
    Per token: l = clip_loss(ratio, A) · w_correction (+ kl.coef · KL(π ‖ ref) when KL is in the loss),
    aggregated with cfg.loss_agg; then − entropy_coef · token-mean(entropy), like TRL, independent of
    loss_agg. norm_tokens overrides cfg.loss_norm_tokens (pass the rollout max_tokens when it is 0).
    Metrics are detached 0-d tensors: pg_loss, the clip metrics, kl, entropy, mismatch/correction.
    """
    if not (logprobs.shape == rollout_logprobs.shape == advantages.shape == mask.shape):
        raise ValueError(
            f"policy_loss: shapes differ: logprobs {tuple(logprobs.shape)}, rollout {tuple(rollout_logprobs.shape)}, "
            f"advantages {tuple(advantages.shape)}, mask {tuple(mask.shape)}"
        )
    m = mask.bool()
    old = rollout_logprobs if old_logprobs is None else old_logprobs
    weights, metrics = correction_weights(old, rollout_logprobs, m, cfg.correction)
    per_token, clip_metrics = ppo_clip_loss(
        logprobs, old, advantages, m, cfg.clip_low, cfg.clip_high, cfg.dual_clip_c, cfg.ratio_level
    )
    metrics.update(clip_metrics)
    per_token = per_token * weights.to(per_token.dtype)
    agg = dict(
        mode=cfg.loss_agg,
        norm_tokens=cfg.loss_norm_tokens if norm_tokens is None else norm_tokens,
        total_tokens=total_tokens,
        total_seqs=total_seqs,
    )
    with torch.no_grad():
        metrics["pg_loss"] = aggregate_loss(per_token.detach(), m, **agg)
    kl_in_loss = cfg.kl.coef > 0 and not cfg.kl.in_reward
    if kl_in_loss and ref_logprobs is None:
        raise ValueError("policy_loss: algo.kl.coef > 0 (in the loss) needs ref_logprobs in the batch")
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl.estimator)
        metrics["kl"] = masked_mean(kl.detach(), m)
        if kl_in_loss:
            per_token = per_token + cfg.kl.coef * torch.where(m, kl, torch.zeros_like(kl))
    loss = aggregate_loss(per_token, m, **agg)
    if entropy is not None:
        ent = masked_mean(entropy, m) if total_tokens is None else masked_sum(entropy, m) / total_tokens
        metrics["entropy"] = ent.detach()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * ent
    elif cfg.entropy_coef > 0:
        raise ValueError("policy_loss: algo.entropy_coef > 0 needs the entropy tensor")
    return loss, metrics
