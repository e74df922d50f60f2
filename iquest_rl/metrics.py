"""Metric sinks: JSONL always; TensorBoard, W&B, MLflow when configured; Ray metrics for the dashboard.

One `MetricsLogger.log(step, metrics)` call fans out to every sink. Values are floats; non-finite values
are kept in JSONL (as null) so a NaN loss is visible rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .config.logging import LoggingConfig

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, run_dir: str | Path, cfg: LoggingConfig, run_name: str = "run",
                 config_dump: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.run_name = run_name
        self._jsonl = open(self.run_dir / METRICS_FILE, "a", buffering=1)
        self._tb = self._wandb = self._mlflow = None
        self._gauges: dict[str, Any] = {}
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if cfg.wandb_project:
            import wandb

            self._wandb = wandb.init(project=cfg.wandb_project, name=run_name, config=config_dump, resume="allow")
        if cfg.mlflow_uri:
            import mlflow

            mlflow.set_tracking_uri(cfg.mlflow_uri)
            mlflow.start_run(run_name=run_name)
            self._mlflow = mlflow

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: _to_float(v) for k, v in metrics.items()}
        row = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        finite = {k: v for k, v in clean.items() if math.isfinite(v)}
        if self._tb is not None:
            for k, v in finite.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(finite, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("/", "."): v for k, v in finite.items()}, step=step)
        if self.cfg.ray_metrics:
            self._ray_export(step, finite)

    def _ray_export(self, step: int, metrics: dict[str, float]) -> None:
        import ray
        from ray.util.metrics import Gauge

        if not ray.is_initialized():
            return
        for k, v in {"step": float(step), **metrics}.items():
            name = ray_metric_name(k)
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = self._gauges[name] = Gauge(name, description=f"iquest-rl {k}", tag_keys=("run",))
            gauge.set(v, tags={"run": self.run_name})

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()


def ray_metric_name(key: str) -> str:
    """`reward/mean` -> `iquest_rl_reward_mean` (Prometheus-safe)."""
    return "iquest_rl_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a later row for the same step (after a resume) replaces the earlier one."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def _to_float(v: Any) -> float:
    if hasattr(v, "item"):
        v = v.item()
    return float(v)
