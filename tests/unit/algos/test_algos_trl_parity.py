"""Our losses against TRL's own GRPOTrainer._compute_loss and its logprob/entropy helpers.

TRL's loss is a method; it is called unbound on a stand-in `self` that carries only the attributes
it reads, with `_get_per_token_logps_and_entropies` returning our tensors, so the arithmetic under
test is TRL's code as installed. TRL's completion tensors start after the prompt; ours are aligned
with input_ids, which only shifts columns, so the (b,t) tensors here play both roles.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo
import trl.trainer.utils as trl_utils

from iquest_rl.algos.batch import logprobs_from_logits
from iquest_rl.algos.losses import entropy_from_logits, policy_loss
from iquest_rl.config.algo import CorrectionConfig, GRPOConfig, KLConfig


MAX_LEN = 8


def trl_compute_loss(loss_type, logps, old, adv, mask, *, eps_low=0.2, eps_high=0.28, beta=0.0, ref=None,
                     level="token", is_ratio=None, entropies=None, entropy_coef=0.0):
    b, t = logps.shape
    stand_in = SimpleNamespace(
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        use_vllm=is_ratio is not None, vllm_importance_sampling_correction=is_ratio is not None,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, max_completion_length=MAX_LEN,
        accelerator=SimpleNamespace(
            num_processes=1, sync_gradients=True, gather=lambda x: x, reduce=lambda x, reduction: x),
        _entropy_bonus_enabled=entropy_coef > 0, entropy_coef=entropy_coef, use_adaptive_entropy=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _get_per_token_logps_and_entropies=lambda *a, **k: (
            logps, entropies if entropies is not None else torch.zeros_like(logps), None),
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": mask.sum(),
    }
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    loss = trl_grpo.GRPOTrainer._compute_loss(stand_in, None, inputs)
    return loss, {k: v[-1] for k, v in stand_in._metrics["train"].items()}


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    b = 5
    lengths = torch.tensor([8, 3, 6, 1, 5])
    mask = (torch.arange(MAX_LEN)[None, :] < lengths[:, None]).float()
    old = torch.randn(b, MAX_LEN, generator=g) * 0.5 - 1.5
    lp = (old + torch.randn(b, MAX_LEN, generator=g) * 0.4).requires_grad_(True)  # wide enough to clip
    adv = torch.tensor([1.3, -0.7, 0.4, -1.1, 0.0])
    return lp, old, adv, mask


def _ours(lp, old, adv, mask, cfg, **kw):
    # TRL has no rollout/learner correction here unless is_ratio is passed; rollout = old makes ours the identity
    rollout = kw.pop("rollout", old)
    return policy_loss(lp, old, rollout, adv[:, None] * mask, mask, cfg, **kw)


@pytest.mark.parametrize(
    "loss_type,agg",
    [("grpo", "seq-mean-token-mean"), ("bnpo", "token-mean"), ("dr_grpo", "seq-mean-token-sum-norm"),
     ("dapo", "token-mean")],
)
def test_loss_types_match_trl(loss_type, agg):
    lp, old, adv, mask = _inputs()
    cfg = GRPOConfig(loss_agg=agg, loss_norm_tokens=MAX_LEN, clip_low=0.2, clip_high=0.28)
    ours, met = _ours(lp, old, adv, mask, cfg)
    theirs, tmet = trl_compute_loss(loss_type, lp, old, adv[:, None], mask)
    torch.testing.assert_close(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours, lp)
    (g_theirs,) = torch.autograd.grad(theirs, lp)
    torch.testing.assert_close(g_ours, g_theirs)
    assert met["clip_frac"].item() > 0  # the comparison exercises clipping
    assert met["clip_frac_low"].item() == pytest.approx(tmet["clip_ratio/low_mean"])
    assert met["clip_frac_high"].item() == pytest.approx(tmet["clip_ratio/high_mean"])
    assert met["clip_frac"].item() == pytest.approx(tmet["clip_ratio/region_mean"])


def test_gspo_sequence_level_matches_trl():
    lp, old, adv, mask = _inputs(1)
    cfg = GRPOConfig(loss_agg="seq-mean-token-mean", ratio_level="sequence", clip_low=0.05, clip_high=0.08)
    ours, _ = _ours(lp, old, adv, mask, cfg)
    theirs, _ = trl_compute_loss("grpo", lp, old, adv[:, None], mask, eps_low=0.05, eps_high=0.08, level="sequence")
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, lp)[0], torch.autograd.grad(theirs, lp)[0])


def test_k3_kl_in_loss_matches_trl_beta():
    lp, old, adv, mask = _inputs(2)
    ref = old + torch.randn(old.shape, generator=torch.Generator().manual_seed(9)) * 0.3
    cfg = GRPOConfig(loss_agg="seq-mean-token-mean", kl=KLConfig(coef=0.04, estimator="k3"))
    ours, met = _ours(lp, old, adv, mask, cfg, ref_logprobs=ref)
    theirs, tmet = trl_compute_loss("grpo", lp, old, adv[:, None], mask, beta=0.04, ref=ref)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, lp)[0], torch.autograd.grad(theirs, lp)[0])
    assert met["kl"].item() == pytest.approx(tmet["kl"], rel=1e-5)


def test_tis_matches_trl_importance_sampling_ratio():
    lp, old, adv, mask = _inputs(3)
    rollout = old + torch.randn(old.shape, generator=torch.Generator().manual_seed(5)) * 0.6
    # TRL's token_truncate ratio (clip_max=2), written from its documented definition
    is_ratio = torch.exp(old - rollout).clamp(max=2.0)
    cfg = GRPOConfig(loss_agg="token-mean", correction=CorrectionConfig(mode="tis", cap=2.0))
    ours, _ = _ours(lp, old, adv, mask, cfg, rollout=rollout)
    theirs, _ = trl_compute_loss("bnpo", lp, old, adv[:, None], mask, is_ratio=is_ratio)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, lp)[0], torch.autograd.grad(theirs, lp)[0])


def test_entropy_bonus_matches_trl():
    lp, old, adv, mask = _inputs(4)
    ent = torch.rand(lp.shape, generator=torch.Generator().manual_seed(6))
    cfg = GRPOConfig(loss_agg="seq-mean-token-mean", entropy_coef=0.02)
    ours, met = _ours(lp, old, adv, mask, cfg, entropy=ent)
    theirs, tmet = trl_compute_loss("grpo", lp, old, adv[:, None], mask, entropies=ent, entropy_coef=0.02)
    torch.testing.assert_close(ours, theirs)
    assert met["entropy"].item() == pytest.approx(tmet["entropy"], rel=1e-6)


def test_logprobs_and_entropy_helpers_match_trl():
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 50)
    ids = torch.randint(0, 50, (3, 9))
    # TRL scores completion tokens with logits[:, :-1] against ids[:, 1:]; ours returns them aligned with ids
    theirs = trl_utils.selective_log_softmax(logits[:, :-1], ids[:, 1:])
    torch.testing.assert_close(logprobs_from_logits(logits, ids, chunk_tokens=3)[:, 1:], theirs)
    hot = trl_utils.selective_log_softmax(logits[:, :-1], ids[:, 1:], temperature=0.7)
    torch.testing.assert_close(logprobs_from_logits(logits, ids, temperature=0.7)[:, 1:], hot)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=5), trl_utils.entropy_from_logits(logits))
