"""`iquest-rl run FILE [overrides] [--resume]`: resolve the config and run directory, then the loop."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def run_main(config: Path, overrides: list[str], resume: bool) -> int:
    from .config import ConfigError, RunConfig, load
    from .versions import check

    try:
        cfg = load(config, overrides, cls=RunConfig)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    check()
    run_dir = Path(cfg.output_dir) / cfg.name
    from .checkpoint import latest

    ckpt = latest(run_dir)
    if ckpt is None and resume:
        print(f"iquest-rl run --resume: {run_dir} has no complete checkpoint to continue from", file=sys.stderr)
        return 2
    if ckpt is not None:
        print(f"iquest-rl run: resuming {run_dir} from {ckpt.name}", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    _log_to(run_dir / "run.log")
    from .controller import run

    state = run(cfg, run_dir)
    print(f"run directory: {run_dir}  (steps done: {state.step}{', interrupted' if state.interrupted else ''})")
    return 130 if state.interrupted else 0


def _log_to(path: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.FileHandler(path)
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(fmt)
    root.addHandler(console)
