"""Ctrl-C (SIGINT) during a run: a checkpoint of the last finished step is saved, then a clean exit (130)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from support.runs import ROOT, metrics

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.deepspeed, pytest.mark.slow]


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path):
    args = [str(ROOT / "experiments/local/digits_grpo.yaml"), f"output_dir={tmp_path}", "name=int",
            "checkpoint_every=0", "steps=200", "logging.progress_bar=false"]
    proc = subprocess.Popen([sys.executable, "-m", "iquest_rl.cli", "run", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "int"
    deadline = time.monotonic() + 600
    while len(metrics(run_dir)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    steps = [r["step"] for r in metrics(run_dir)]
    last = steps[-1]
    assert 2 <= last < 200
    ckpt = run_dir / "checkpoints" / f"step_{last:08d}"
    assert (ckpt / "COMPLETE").exists(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert (ckpt / "hf" / "model.safetensors").exists()
