"""Trajectories + rewards -> TrainBatch, and the logits -> per-token logprob helper.

Sequences are the token-exact ids of `Trajectory.token_ids` (never a re-rendered chat template),
right-padded. Every token tensor is aligned with input_ids: position t holds token t's loss mask,
rollout logprob, advantage, and (from `logprobs_from_logits`) its learner logprob.

Shift convention: a causal LM's logits at position t predict token t+1, so token t's logprob comes
from logits[:, t-1]; token 0 has no prediction (its logprob is 0 and it may not be a sampled token).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from torch import Tensor

from iquest_rl.config.algo import GRPOConfig, PPOConfig
from iquest_rl.types import Trajectory, TrainBatch

from .advantages import sequence_advantages
from .filters import apply_overlong


def logprobs_from_logits(logits: Tensor, input_ids: Tensor, temperature: float = 1.0,
                         chunk_tokens: int = 2048) -> Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) aligned with input_ids.  (b,t,V), (b,t) -> (b,t) float32

    logits are the model's outputs on input_ids (position t predicts token t+1); out[:, 0] = 0.
    Divides by the sampling temperature so the numbers compare with vLLM's logprobs of the same
    distribution. Works `chunk_tokens` positions at a time in float32 (log-softmax via logsumexp and
    a gather), recomputing each chunk in backward instead of keeping it, so no (b, t, V) float32
    tensor is ever made from bf16 logits (4 x 8k tokens x a 152k vocabulary would be 20 GB).
    """
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"logprobs_from_logits: logits {tuple(logits.shape)} do not match input_ids {tuple(input_ids.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"logprobs_from_logits: temperature must be > 0, got {temperature}")
    b, t, v = logits.shape
    # Position t of row r predicts token t+1: score every position against the next token (the
    # row's last position against its first, dropped below). Flattening the whole tensor is a
    # view; flattening logits[:, :-1] would copy all the logits.
    pred = logits.reshape(-1, v)
    labels = input_ids.roll(-1, dims=1).reshape(-1, 1)

    def chunk(lg: Tensor, lb: Tensor) -> Tensor:
        lg = lg.float()
        if temperature != 1.0:
            lg = lg / temperature
        return torch.gather(lg, -1, lb).squeeze(-1) - torch.logsumexp(lg, dim=-1)

    grad = torch.is_grad_enabled() and logits.requires_grad
    parts = [torch.utils.checkpoint.checkpoint(chunk, lg, lb, use_reentrant=False) if grad else chunk(lg, lb)
             for lg, lb in zip(pred.split(chunk_tokens), labels.split(chunk_tokens))]
    shifted = (torch.cat(parts) if parts else pred.new_zeros(0, dtype=torch.float32)).view(b, t)[:, :-1]
    return torch.cat([shifted.new_zeros(shifted.shape[0], 1), shifted], dim=1)


def _check(traj: Trajectory, row: int) -> None:
    mask = traj.loss_mask
    if not mask:
        raise ValueError(f"build_batch: trajectory row {row} (task {traj.task_id}) has no tokens")
    if mask[0]:
        raise ValueError(
            f"build_batch: trajectory row {row} (task {traj.task_id}) starts with a sampled token; "
            "token 0 has no logits to score it (the prompt must come first)"
        )


def build_batch(
    trajectories: Sequence[Trajectory],
    rewards: Sequence[float] | Tensor,
    algo: GRPOConfig | PPOConfig,
    pad_id: int = 0,
    max_tokens: int = 0,
    pad_to_multiple_of: int = 1,
) -> TrainBatch:
    """Right-padded TrainBatch with per-token advantages on the sampled tokens.  n trajectories, (n,) -> TrainBatch

    Steps: overlong handling (finish_reason == "length" is truncated; `max_tokens` is the rollout's
    max_tokens, needed by the soft penalty), then for GRPO the group advantages over
    Trajectory.group_id (cfg.advantage, cfg.scale_std) broadcast onto loss-mask tokens. For PPO the
    advantages are left 0: they need the critic's values, so the learner runs `advantages.gae` on
    `rewards` (shaped reward per sequence) itself. Masked-out overlong rows keep their ids but get
    loss_mask 0. Zero-variance groups are not dropped here (see filters.nonzero_variance_groups).
    """
    n = len(trajectories)
    if n == 0:
        raise ValueError("build_batch: no trajectories")
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.shape != (n,):
        raise ValueError(f"build_batch: {n} trajectories but rewards has shape {tuple(r.shape)}")
    for i, traj in enumerate(trajectories):
        _check(traj, i)

    lengths = torch.tensor([t.num_sampled for t in trajectories])
    truncated = torch.tensor([t.finish_reason == "length" for t in trajectories])
    if algo.overlong == "penalize" and algo.overlong_penalty_tokens > 0 and max_tokens <= 0:
        raise ValueError("build_batch: algo.overlong=penalize with a window needs max_tokens (the rollout max_tokens)")
    r, keep = apply_overlong(r, lengths, truncated, algo.overlong, max_tokens, algo.overlong_penalty_tokens)

    seq_len = max(len(t.token_ids) for t in trajectories)
    seq_len = -(-seq_len // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, seq_len), dtype=torch.long)
    loss_mask = torch.zeros((n, seq_len), dtype=torch.float32)
    rollout_lp = torch.zeros((n, seq_len), dtype=torch.float32)
    for i, traj in enumerate(trajectories):
        ids = traj.token_ids
        k = len(ids)
        input_ids[i, :k] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, :k] = 1
        loss_mask[i, :k] = torch.tensor(traj.loss_mask, dtype=torch.float32) * float(keep[i])
        rollout_lp[i, :k] = torch.tensor(traj.rollout_logprobs, dtype=torch.float32)
    rollout_lp = rollout_lp * (loss_mask > 0)

    if algo.name == "grpo":
        group_ids = torch.tensor([t.group_id for t in trajectories])
        seq_adv = sequence_advantages(r, group_ids, algo.advantage, algo.scale_std)
    else:
        seq_adv = torch.zeros(n)
    versions = [t.min_policy_version for t in trajectories]
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        advantages=seq_adv.unsqueeze(-1) * loss_mask,
        rollout_logprobs=rollout_lp,
        policy_versions=torch.tensor([-1 if v is None else v for v in versions], dtype=torch.long),
        rewards=r,
        group_ids=torch.tensor([t.group_id for t in trajectories]),
    )


def grpo_kl_in_reward(batch: TrainBatch, algo: GRPOConfig) -> dict[str, float]:
    """KL in the reward for GRPO (algo.kl.in_reward): each sequence reward loses coef · Σ_t KL_t(rollout ‖
    reference) over its sampled tokens, and the group advantages are recomputed from the penalised
    rewards. Fills batch.rewards/advantages in place.  -> {"kl/reward_penalty_mean": ...}"""
    from .kl import kl_in_reward

    if batch.ref_logprobs is None or batch.group_ids is None:
        raise ValueError("grpo_kl_in_reward: the batch needs ref_logprobs and group_ids")
    mask = torch.as_tensor(batch.loss_mask).float()
    before = torch.as_tensor(batch.rewards, dtype=torch.float32)
    after = kl_in_reward(before, torch.as_tensor(batch.rollout_logprobs), torch.as_tensor(batch.ref_logprobs),
                         mask, algo.kl.coef, algo.kl.estimator)
    seq_adv = sequence_advantages(after, torch.as_tensor(batch.group_ids), algo.advantage, algo.scale_std)
    batch.rewards, batch.advantages = after, seq_adv.unsqueeze(-1) * mask
    return {"kl/reward_penalty_mean": float((before - after).mean())}


def token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Place each sequence reward on its last loss-mask token (for GAE).  (b,), (b,t) -> (b,t)

    Rows with an empty mask get no reward.
    """
    m = mask.bool()
    t = m.shape[1]
    pos = torch.arange(t, device=m.device).expand_as(m)
    last = torch.where(m, pos, torch.full_like(pos, -1)).max(-1).values
    out = torch.zeros(m.shape, dtype=rewards.dtype, device=m.device)
    has = last >= 0
    out[has.nonzero().flatten(), last[has]] = rewards[has]
    return out
