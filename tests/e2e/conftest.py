"""Session fixtures of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.runs import ROOT, cli


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """The CPU learning run (experiments/local/digits_grpo.yaml, 30 steps, checkpoint every 3):
    shared by the learning test and as the uninterrupted baseline of the resume test."""
    out = tmp_path_factory.mktemp("runs")
    r = cli("run", str(ROOT / "experiments/local/digits_grpo.yaml"), f"output_dir={out}", "name=digits",
            "checkpoint_every=3", "keep_checkpoints=20", "logging.progress_bar=false", "eval_every=10",
            "tasks.eval_sources=[{kind: prompts, path: 'builtin:digits', limit: 4}]", cwd=out)
    assert r.returncode == 0, r.stderr[-4000:]
    return out / "digits"
