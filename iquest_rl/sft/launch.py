"""`iquest-rl sft`: resolve the config, prepare data once, launch `num_ranks` training processes, wait.

The parent imports no torch: it renders the data (tokenizer only), then starts one
`python -m iquest_rl.sft.worker RUN_DIR` per rank with a torch.distributed env (gloo and
DS_ACCELERATOR=cpu without a GPU), each logging to <run_dir>/logs/rank<R>.log. Rank 0's log is
echoed live. When a rank fails, the others are stopped and its log tail is printed; Ctrl-C is
forwarded to every rank. Single node only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import iquest_rl
from iquest_rl.config import ConfigError, SFTConfig, dump_yaml, kind_of, load

TAIL_LINES = 40
"""Lines of a failed rank's log shown by the parent."""
GRACE_S = 10.0
"""Seconds ranks get to exit after SIGINT/SIGTERM before SIGKILL."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iquest-rl sft", description="supervised fine-tuning (TRL + DeepSpeed)")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--branch", choices=["instruct", "thinking"], default=None, help="overrides the recipe's branch")
    p.add_argument("--config", type=Path, default=None, help="SFT recipe (kind: sft); default: SFTConfig defaults")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint (auto when one exists)")
    p.add_argument("--quiet", action="store_true", help="do not echo rank 0's log")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lr=1e-5 lora.rank=8")


def sft_main(argv: list[str] | None = None) -> int:
    """CLI entry: returns the process exit code (0 ok, 2 bad config/data, else a rank's code)."""
    return sft_command(build_parser().parse_intermixed_args(argv))


def sft_command(args: argparse.Namespace) -> int:
    """Run from parsed arguments (used by iquest_rl.cli)."""
    try:
        cfg = resolve_config(args.config, list(args.overrides), args.branch)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    return launch(cfg, run_dir_of(cfg), resume=True if getattr(args, "resume", False) else None,
                  echo=not getattr(args, "quiet", False))


def resolve_config(path: Path | None, overrides: list[str], branch: str | None) -> SFTConfig:
    if path is not None and kind_of(path) is not SFTConfig:
        raise ConfigError(f"{path}: not an SFT recipe (needs `kind: sft`)")
    if branch is not None:
        overrides = [*overrides, f"branch={branch}"]
    return load(path, overrides, cls=SFTConfig)


def run_dir_of(cfg: SFTConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def launch(cfg: SFTConfig, run_dir: Path, resume: bool | None = None, echo: bool = True) -> int:
    """Prepare data, write config.yaml, run the ranks; the exit code of the run."""
    from iquest_rl.data.messages import MessagesDataError

    from .data import prepare
    from .trainer import last_checkpoint, load_tokenizer

    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and last_checkpoint(run_dir) is None:
        print(f"iquest-rl sft: --resume: no checkpoint under {run_dir / 'checkpoints'}", file=sys.stderr)
        return 2
    dump_yaml(cfg, run_dir / "config.yaml")
    shutil.rmtree(run_dir / "data", ignore_errors=True)
    try:
        report = prepare(cfg, load_tokenizer(cfg), run_dir / "data")
    except MessagesDataError as e:
        print(f"iquest-rl sft: {e}", file=sys.stderr)
        return 2
    print(f"iquest-rl sft: {report.train_rows} train / {report.val_rows} val rows, "
          f"{report.skipped_rows} skipped; {cfg.num_ranks} rank(s) -> {run_dir}", flush=True)
    procs, logs = start_ranks(run_dir, cfg.num_ranks, resume)
    rc = wait_ranks(procs, logs, echo)
    if rc == 0:
        print(f"iquest-rl sft: done: {run_dir / 'final'}", flush=True)
    return rc


def start_ranks(run_dir: Path, n: int, resume: bool | None) -> tuple[list[subprocess.Popen], list[Path]]:
    (run_dir / "logs").mkdir(exist_ok=True)
    base = rank_env(n)
    cmd = [sys.executable, "-m", "iquest_rl.sft.worker", str(run_dir)]
    if resume:
        cmd.append("--resume")
    procs, logs = [], []
    for r in range(n):
        log = run_dir / "logs" / f"rank{r}.log"
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
        with log.open("w") as f:
            # Own session: the parent decides when ranks get SIGINT, and can kill a rank's whole group.
            procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        logs.append(log)
    return procs, logs


def rank_env(n: int) -> dict[str, str]:
    """torch.distributed env shared by the ranks (RANK/LOCAL_RANK added per rank)."""
    env = dict(os.environ)
    root = str(Path(iquest_rl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.update(WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if not has_gpu():
        env.setdefault("DS_ACCELERATOR", "cpu")
        # Ranks share the cores; unbounded OpenMP threads per rank oversubscribe them.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def has_gpu() -> bool:
    """A CUDA device is visible (checked without importing torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def wait_ranks(procs: list[subprocess.Popen], logs: list[Path], echo: bool) -> int:
    """Wait for all ranks; on a failure stop the rest and show the failing log's tail."""
    pos = 0
    try:
        while True:
            if echo:
                pos = _echo(logs[0], pos)
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                r, c = failed[0]
                stop(procs, signal.SIGTERM)
                print(f"iquest-rl sft: rank {r} failed (exit {c}); last {TAIL_LINES} lines of {logs[r]}:",
                      file=sys.stderr)
                print(tail(logs[r], TAIL_LINES), file=sys.stderr)
                return c if c > 0 else 128 - c
            if all(c == 0 for c in codes):
                if echo:
                    _echo(logs[0], pos)
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("iquest-rl sft: interrupted; stopping ranks", file=sys.stderr)
        stop(procs, signal.SIGINT)
        return 130


def stop(procs: list[subprocess.Popen], sig: int) -> None:
    """Send sig to each live rank's process group, then SIGKILL whatever outlives GRACE_S."""
    for p in procs:
        if p.poll() is None:
            _killpg(p, sig)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _killpg(p, signal.SIGKILL)
            p.wait()


def tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"


def _killpg(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def _echo(log: Path, pos: int) -> int:
    try:
        with log.open("rb") as f:
            f.seek(pos)
            chunk = f.read()
    except OSError:
        return pos
    if chunk:
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    return pos + len(chunk)


if __name__ == "__main__":
    sys.exit(sft_main())
