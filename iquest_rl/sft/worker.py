"""One SFT rank: `python -m iquest_rl.sft.worker RUN_DIR [--resume]`, started by launch.py.

Reads the resolved <run_dir>/config.yaml and the prepared data; the torch.distributed env
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) comes from the launcher.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="iquest_rl.sft.worker")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    from iquest_rl.config import SFTConfig, load

    from .trainer import run_sft

    cfg = load(args.run_dir / "config.yaml", cls=SFTConfig)
    run_sft(cfg, args.run_dir, resume=True if args.resume else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
