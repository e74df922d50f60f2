"""Format reward: every sampled turn has well-formed thinking and parseable tool calls."""

from __future__ import annotations

from dataclasses import dataclass

from iquest_rl.types import Outcome, RewardResult, Task, Trajectory
from sandboxes.runtimes.common import GradeResult


def think_ok(text: str, start: str = "<think>", end: str = "</think>", require: bool = False) -> bool:
    """At most one start and one end marker, the start (when present; templates may put it in the
    prompt) before the end, and an end marker when there is a start or `require` is set."""
    n_start, n_end = text.count(start), text.count(end)
    if n_start > 1 or n_end > 1:
        return False
    if n_start and (not n_end or text.index(start) > text.index(end)):
        return False
    return bool(n_end) or not require


@dataclass(frozen=True)
class FormatReward:
    """1.0 when every sampled turn is well-formed, else 0.0 (components count the bad turns)."""

    name: str = "format"
    needs_grade: bool = False
    tool_call_format: str | None = "hermes"
    """Parser for tool calls (hermes, qwen3_coder); None = do not check tool calls."""
    require_think: bool = False
    """Every sampled turn must close a <think> block."""
    think_start: str = "<think>"
    think_end: str = "</think>"

    def score(self, task: Task, trajectory: Trajectory, grade: GradeResult | None = None) -> RewardResult:
        parse = None
        if self.tool_call_format:
            from iquest_rl.agent.parsers import get_format  # pure text parsing, no model or engine
            parse = get_format(self.tool_call_format).parse
        bad_think = bad_calls = 0
        turns = [t for t in trajectory.turns if t.sampled]
        for turn in turns:
            if not think_ok(turn.text, self.think_start, self.think_end, self.require_think):
                bad_think += 1
            if parse is not None:
                answer = turn.text.rsplit(self.think_end, 1)[-1]
                _, _, errors = parse(answer, None)
                bad_calls += bool(errors)
        ok = bool(turns) and bad_think == 0 and bad_calls == 0
        reason = "well-formed" if ok else (f"{bad_think} turn(s) with malformed thinking, {bad_calls} with "
                                           f"malformed tool calls, of {len(turns)} sampled")
        return RewardResult(float(ok), Outcome.PASSED if ok else Outcome.FAILED,
                            {"bad_think_turns": float(bad_think), "bad_tool_call_turns": float(bad_calls)}, reason)
