"""Helpers for end-to-end runs: the real CLI in a subprocess, metrics, leftover containers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, timeout: float = 900, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "iquest_rl.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def metrics(run_dir: Path) -> list[dict]:
    from iquest_rl.metrics import read_metrics

    return read_metrics(run_dir)


def ours(run_dir: Path) -> list[str]:
    """Containers still alive that a run in run_dir labelled (there must be none after it ends)."""
    import docker

    client = docker.from_env()
    return [c.name for c in client.containers.list(all=True, filters={"label": "iquest-rl.run_id"})
            if c.labels.get("iquest-rl.run_id", "").startswith(run_dir.name)]


def dump(rows: list[dict]) -> str:
    return json.dumps([{k: r.get(k) for k in ("step", "reward/mean", "train/loss")} for r in rows])
