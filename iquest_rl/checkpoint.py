"""Atomic checkpoints: learner DeepSpeed state (resume), an HF safetensors export (transformers/vLLM),
and the controller's state (step, data cursor, RNG states).

Layout of <run_dir>/checkpoints/step_00000012/:
  deepspeed/   engine.save_checkpoint of the policy (each rank writes its partitions; tag "state")
  critic/      the same for the PPO critic, when there is one
  hf/          model.safetensors (or shards + index), config, tokenizer: loadable by from_pretrained and vLLM
  controller.json   the controller's JSON state;  rng.pkl   python/numpy/torch RNG states
  COMPLETE     written last; only directories with it count
A checkpoint is written into `.tmp-step_…` and renamed into place, so a crash leaves no half checkpoint
that `latest` could pick. The ranks must share the run directory's filesystem (one node, or NFS).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"
_STEP_RE = re.compile(r"^step_(\d+)$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
DS_TAG = "state"


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and (p / COMPLETE).is_file()]
    return [p for _, p in sorted(found)]


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def prune(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (and stale temporaries); returns those deleted."""
    if keep < 1:
        raise ValueError(f"checkpoint.prune: keep must be >= 1, got {keep}")
    done = complete_checkpoints(run_dir)
    doomed = done[:-keep]
    root = Path(run_dir) / "checkpoints"
    doomed += [p for p in root.glob(".tmp-step_*") if p.is_dir()] if root.is_dir() else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def save(run_dir: str | Path, step: int, controller_state: dict[str, Any],
         write_learner: Callable[[Path], None] | None = None, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and keep the newest `keep`. Returns its directory.

    write_learner(tmp_dir) makes the learners write deepspeed/ and hf/ into tmp_dir (every rank must
    take part: it is a collective). controller_state must be JSON-serialisable.
    """
    final = step_dir(run_dir, step)
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if write_learner is not None:
        write_learner(tmp)
    try:
        text = json.dumps(controller_state, indent=1, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"checkpoint {final}: controller_state is not JSON-serialisable: {e}") from None
    (tmp / "controller.json").write_text(text)
    with open(tmp / "rng.pkl", "wb") as f:
        pickle.dump(rng_state(), f)
    (tmp / COMPLETE).write_text(json.dumps({"step": step, "time": time.time()}))
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step (e.g. after a resume) replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    prune(run_dir, keep)
    return final


def restore(ckpt: str | Path, set_rng: bool = True) -> dict[str, Any]:
    """The controller state of a complete checkpoint; also restores the RNG states when set_rng."""
    ckpt = Path(ckpt)
    if not (ckpt / COMPLETE).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} is not complete (no {COMPLETE} marker)")
    state = json.loads((ckpt / "controller.json").read_text())
    if set_rng:
        with open(ckpt / "rng.pkl", "rb") as f:
            set_rng_state(pickle.load(f))
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) RNG states."""
    out: dict[str, Any] = {"python": random.getstate()}
    try:
        import numpy as np

        out["numpy"] = np.random.get_state()
    except ImportError:
        pass
    import sys

    if "torch" in sys.modules:  # never import torch just to save an untouched RNG
        import torch

        # The controller's CPU generator only: it runs no CUDA work, and per-device CUDA states
        # would not restore on a node with fewer GPUs. Learner ranks save their own CUDA state.
        out["torch"] = torch.get_rng_state()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])


# ---- HF export ---------------------------------------------------------------------------------


def export_hf(named: Any, out_dir: str | Path, source_dir: str | Path, shard_bytes: int = 2 * 2**30) -> Path:
    """Write (name, tensor) pairs as an HF checkpoint: safetensors shards (+ index when more than one),
    and every non-weight file of `source_dir` (config, generation config, tokenizer, chat template)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(source_dir).iterdir():
        if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and not f.name.endswith(".index.json"):
            shutil.copy2(f, out_dir / f.name)
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, t in named:
        nb = t.numel() * t.element_size()
        if shards[-1] and size + nb > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t.detach().contiguous().cpu()
        size += nb
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return out_dir
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata={"format": "pt"})
        for n, t in shard.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return out_dir


# ---- learner side (called inside LearnerWorker; every rank) -----------------------------------


def save_learner(worker: Any, ckpt_dir: str | Path, export_hf_weights: bool = True) -> None:
    """DeepSpeed state of the policy (and critic) plus, on rank 0, the merged HF export. Collective."""
    import torch

    from iquest_rl.models.tiny import resolve_model_path
    from iquest_rl.weight_sync.gather import gathered_weights

    ckpt_dir = Path(ckpt_dir)
    client = {"version": worker.version, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():  # dropout (LoRA's too) draws from the rank's CUDA generator
        client["cuda_rng"] = torch.cuda.get_rng_state()
    worker.engine.save_checkpoint(str(ckpt_dir / "deepspeed"), tag=DS_TAG, client_state=client)
    if worker.critic is not None:
        worker.critic.engine.save_checkpoint(str(ckpt_dir / "critic"), tag=DS_TAG)
    if export_hf_weights:
        named = gathered_weights(worker.engine.module, worker.cfg.sync_bucket_mb * 2**20, worker.rank)
        if worker.rank == 0:
            export_hf(named, ckpt_dir / "hf", resolve_model_path(worker.model_cfg.path))
        else:
            for _ in named:
                pass


def load_learner(worker: Any, ckpt_dir: str | Path) -> None:
    """Restore weights, optimiser and scheduler of the policy (and critic) saved by save_learner. Collective."""
    import torch

    ckpt_dir = Path(ckpt_dir)
    path, client = worker.engine.load_checkpoint(str(ckpt_dir / "deepspeed"), tag=DS_TAG,
                                                 load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"learner rank {worker.rank}: no DeepSpeed checkpoint under {ckpt_dir / 'deepspeed'}")
    worker.version = int(client.get("version", 0))
    if "torch_rng" in client:
        torch.set_rng_state(client["torch_rng"])
    if "cuda_rng" in client and torch.cuda.is_available():
        torch.cuda.set_rng_state(client["cuda_rng"])
    if worker.critic is not None:
        cpath, _ = worker.critic.engine.load_checkpoint(str(ckpt_dir / "critic"), tag=DS_TAG,
                                                       load_optimizer_states=True, load_lr_scheduler_states=True)
        if cpath is None:
            raise FileNotFoundError(f"learner rank {worker.rank}: no critic checkpoint under {ckpt_dir / 'critic'}")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
