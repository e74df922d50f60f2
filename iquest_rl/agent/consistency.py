"""Check that a trajectory's ids are exactly what the engine was given as prompt at every turn.

Each prompt the engine saw must be a prefix of the trajectory's concatenated ids, and must end
where a sampled turn begins. A mismatch means training would score tokens the policy never saw.
"""

from __future__ import annotations

from typing import Sequence

from iquest_rl.types import Trajectory


class PromptMismatchError(AssertionError):
    """The trajectory differs from a prompt the engine saw; names the turn and first differing index."""


def find_prompt_mismatch(trajectory: Trajectory, seen_prompt_ids: Sequence[Sequence[int]]) -> str | None:
    """None when consistent, else a message naming the sampled turn and the first differing token index."""
    ids = trajectory.token_ids
    starts = []
    pos = 0
    for turn in trajectory.turns:
        if turn.sampled:
            starts.append(pos)
        pos += len(turn.token_ids)
    if len(seen_prompt_ids) != len(starts):
        return (f"trajectory {trajectory.task_id}: {len(starts)} sampled turns but the engine saw "
                f"{len(seen_prompt_ids)} prompts")
    for turn_no, (prompt, start) in enumerate(zip(seen_prompt_ids, starts)):
        limit = min(len(prompt), start)
        for i in range(limit):
            if prompt[i] != ids[i]:
                return (f"trajectory {trajectory.task_id}, sampled turn {turn_no}: prompt differs at "
                        f"token {i}: engine saw {prompt[i]}, trajectory has {ids[i]}")
        if len(prompt) != start:
            return (f"trajectory {trajectory.task_id}, sampled turn {turn_no}: engine prompt has "
                    f"{len(prompt)} tokens but the turn starts at token {start}; first differing index {limit}")
    return None


def check_prompt_consistency(trajectory: Trajectory, seen_prompt_ids: Sequence[Sequence[int]]) -> None:
    """Raise PromptMismatchError at the first difference (see find_prompt_mismatch)."""
    problem = find_prompt_mismatch(trajectory, seen_prompt_ids)
    if problem is not None:
        raise PromptMismatchError(problem)
