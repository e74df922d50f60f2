"""Where metrics go."""

from __future__ import annotations

from .base import StrictModel


class LoggingConfig(StrictModel):
    tensorboard: bool = True
    """Write TensorBoard event files under <run_dir>/tensorboard."""
    wandb_project: str | None = None
    """Weights & Biases project; None = off."""
    mlflow_uri: str | None = None
    """MLflow tracking URI; None = off."""
    ray_metrics: bool = True
    """Export metrics through Ray's metrics API (they appear on the Ray dashboard)."""
    progress_bar: bool = True
    """Show a progress bar with the live headline numbers."""
    plots: bool = True
    """Write PNG curves into the run directory at each checkpoint and at the end."""
