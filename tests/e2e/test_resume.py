"""Kill a run after step 3 (SIGKILL, no goodbye) and resume it: steps 4-6 match the run that never stopped."""

import os
import signal
import subprocess
import sys
import time

import pytest

from support.runs import ROOT, cli, dump, metrics

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.deepspeed, pytest.mark.slow]


def test_killed_run_resumes_like_an_uninterrupted_one(tmp_path, digits_run):
    recipe = str(ROOT / "experiments/local/digits_grpo.yaml")
    args = [recipe, f"output_dir={tmp_path}", "name=digits", "checkpoint_every=3", "steps=6",
            "logging.progress_bar=false"]
    proc = subprocess.Popen([sys.executable, "-m", "iquest_rl.cli", "run", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = tmp_path / "digits/checkpoints/step_00000003/COMPLETE"
    deadline = time.monotonic() + 600
    while not done.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done.exists(), "the run never reached its step-3 checkpoint"
    before = metrics(tmp_path / "digits")
    assert 3 <= len(before) < 6

    r = cli("run", *args, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming" in r.stderr
    resumed = {row["step"]: row for row in metrics(tmp_path / "digits")}
    baseline = {row["step"]: row for row in metrics(digits_run)}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        a, b = resumed[step], baseline[step]
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=0.02), dump([a, b])
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=0.05), dump([a, b])
