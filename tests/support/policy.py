"""Helpers for learner <-> rollout tests: what the engine serves, aligned like the learner's logprobs."""

from __future__ import annotations

from typing import Any


def served_logprobs(rollout: Any, input_ids: Any, attention_mask: Any = None) -> Any:
    """Prompt logprobs a RolloutWorker serves for each row.  (b,t) ids, (b,t) mask | None -> (b,t)

    Aligned like LearnerWorker.compute_logprobs: token 0 has no logprob (0), and so do padding
    positions (only each row's real tokens, attention_mask 1 on a prefix, are sent to the engine).
    """
    import torch

    rows = input_ids.tolist()
    if attention_mask is not None:
        rows = [r[: int(n)] for r, n in zip(rows, attention_mask.sum(1).tolist())]
    out = torch.zeros(input_ids.shape, dtype=torch.float32)
    for i, lp in enumerate(rollout.probe_logprobs(rows)):
        out[i, 1: 1 + len(lp)] = torch.tensor(lp)
    return out
