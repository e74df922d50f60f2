"""Every trajectory of a run, token-exact, with its reward and outcome: gzip JSONL per step."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from .types import RewardResult, Trajectory

DIR = "trajectories"


def record(traj: Trajectory, reward: RewardResult | None, step: int) -> dict[str, Any]:
    """A JSON-ready record of one trajectory and its grading."""
    out = dataclasses.asdict(traj)
    out["step"] = step
    out["reward"] = None if reward is None else {
        "reward": reward.reward, "outcome": reward.outcome.value, "components": reward.components,
        "reason": reward.reason, "log_excerpt": reward.log_excerpt,
    }
    return out


def write_step(run_dir: str | Path, step: int, records: list[dict[str, Any]]) -> Path:
    """Write (atomically) the records of one step; a rerun of the step after a resume replaces them."""
    d = Path(run_dir) / DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{step:06d}.jsonl.gz"
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    return path


def iter_records(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    for path in sorted((Path(run_dir) / DIR).glob("step_*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
