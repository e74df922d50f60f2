"""SFT metrics: a TrainerCallback writing one JSON object per log event, and the loss-curve plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class JsonlMetrics(TrainerCallback):
    """Appends `{"step", "time", <trainer logs>, **extra}` to a JSONL file (world rank 0 only)."""

    def __init__(self, path: str | Path, extra: dict | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.write({"step": state.global_step, **logs, **self.extra})


class SaveAtEnd(TrainerCallback):
    """Checkpoint at the last step when periodic saving is off, so `--resume` has something to resume."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Training loss per step and validation loss where evaluated, as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)
