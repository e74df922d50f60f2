"""`iquest-rl inspect RUN` (curves, worst failures, infrastructure errors) and
`iquest-rl export-sft RUN --min-reward R` (successful trajectories -> messages JSONL for `iquest-rl sft`)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .metrics import read_metrics
from .trajectory_store import iter_records

_SPARK = " ▁▂▃▄▅▆▇█"
_TOOL_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.S)
_END = ("<|im_end|>", "<|endoftext|>")


def spark(values: list[float]) -> str:
    """A one-line curve of values (min..max scaled)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_SPARK[int((v - lo) / span * (len(_SPARK) - 1))] for v in values)


def summarise(run_dir: Path, worst: int = 5) -> dict[str, Any]:
    rows = read_metrics(run_dir)
    curves = {}
    for key in ("reward/mean", "reward/pass_rate", "response/length_mean", "infra_error_rate", "time/step"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            curves[key] = {"first": vals[0], "last": vals[-1], "min": min(vals), "max": max(vals), "curve": spark(vals)}
    infra, failures, n = Counter(), [], 0
    for rec in iter_records(run_dir):
        n += 1
        rew = rec.get("reward") or {}
        if rew.get("outcome") == "infra_error":
            infra[rew.get("reason", "")[:160]] += 1
        elif rew:
            failures.append((rew.get("reward", 0.0), rec["step"], rec["task_id"], rec["finish_reason"],
                             rew.get("reason", "")[:200]))
    failures.sort(key=lambda f: f[0])
    return {"run_dir": str(run_dir), "steps": len(rows), "trajectories": n, "curves": curves,
            "infra_errors": dict(infra.most_common()),
            "worst": [dict(zip(("reward", "step", "task_id", "finish_reason", "reason"), f)) for f in failures[:worst]]}


def inspect_main(run_dir: Path, as_json: bool = False) -> int:
    if not (run_dir / "metrics.jsonl").exists():
        print(f"iquest-rl inspect: {run_dir} is not a run directory (no metrics.jsonl)", file=sys.stderr)
        return 2
    s = summarise(run_dir)
    if as_json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['run_dir']}: {s['steps']} steps, {s['trajectories']} trajectories")
    for key, c in s["curves"].items():
        print(f"  {key:24s} {c['curve']}  first {c['first']:.3g}  last {c['last']:.3g}  max {c['max']:.3g}")
    print(f"  infrastructure errors: {sum(s['infra_errors'].values())}")
    for reason, count in s["infra_errors"].items():
        print(f"    {count:4d}  {reason}")
    print("  worst trajectories:")
    for w in s["worst"]:
        print(f"    step {w['step']:4d}  {w['task_id']:24s} reward {w['reward']:.3g}  {w['finish_reason']:10s} {w['reason']}")
    return 0


def to_messages(rec: dict[str, Any]) -> dict[str, Any] | None:
    """A trajectory record -> a messages row ({"messages", "tools"?}) in the chat's own words.

    Assistant turns keep their text exactly as sampled (thinking and tool calls inline); tool
    responses are read back from the observation turns."""
    prompt = rec.get("meta", {}).get("prompt")
    if not prompt:
        return None
    messages = [dict(m) for m in prompt]
    for turn in rec["turns"][1:]:
        text = turn["text"]
        if turn["sampled"]:
            for end in _END:
                text = text.split(end, 1)[0]
            messages.append({"role": "assistant", "content": text})
        else:
            messages += [{"role": "tool", "content": body} for body in _TOOL_RESPONSE.findall(text)]
    row: dict[str, Any] = {"messages": messages}
    if rec.get("meta", {}).get("tools"):
        row["tools"] = rec["meta"]["tools"]
    return row


def export_sft_main(run_dir: Path, min_reward: float, out: Path | None) -> int:
    from .data.messages import validate_row

    out = out or run_dir / f"sft_export_min{min_reward:g}.jsonl"
    kept = skipped = 0
    with open(out, "w") as f:
        for rec in iter_records(run_dir):
            rew = rec.get("reward") or {}
            if rew.get("outcome") == "infra_error" or rew.get("reward", float("-inf")) < min_reward:
                continue
            row = to_messages(rec)
            if row is None or validate_row(row) is not None:
                skipped += 1
                continue
            f.write(json.dumps(row) + "\n")
            kept += 1
    print(f"{out}: {kept} trajectories with reward >= {min_reward:g}" + (f" ({skipped} unusable skipped)" if skipped else ""))
    return 0
