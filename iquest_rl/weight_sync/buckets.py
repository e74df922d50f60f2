"""CPU transport: weights travel as safetensors buckets in shared memory, each with a checksum.

The learner writes buckets (one file per ~sync_bucket_mb), the rollout worker verifies each bucket's
checksum before loading it, so a corrupted or truncated bucket is detected rather than served.
Tensors cannot be passed as collective_rpc arguments (they arrive as lists), hence files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


class WeightSyncError(RuntimeError):
    """A bucket failed its checksum, or a worker serves other weights than were sent."""


@dataclass(frozen=True)
class WeightUpdate:
    """One versioned push: the bucket files and their sender-side checksums."""

    version: int
    bucket_paths: list[str]
    checksums: list[str]
    names: list[list[str]] = field(default_factory=list)
    """Tensor names per bucket, for error messages."""
    probe: str = ""
    """weight_sync.fingerprint checksum of the probed tensors sent (embeddings, norms, LM head); the
    receiver recomputes it on what it serves after loading. Empty = not checked."""
    probe_names: list[str] = field(default_factory=list)
    """Names covered by `probe` (a partial update probes only the tensors it carries)."""


def default_root() -> Path:
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")) / "iquest-rl-weights"


def tensors_checksum(named: Iterable[tuple[str, "object"]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, in order."""
    import torch

    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_buckets(named: Iterable[tuple[str, "object"]], out_dir: str | Path, version: int,
                  bucket_bytes: int) -> WeightUpdate:
    """Split tensors into buckets of about bucket_bytes and write them as safetensors files."""
    from safetensors.torch import save_file

    from .fingerprint import combine, is_probed, tensor_digest

    out_dir = Path(out_dir) / f"v{version}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    paths, sums, names = [], [], []
    probe: dict[str, str] = {}
    bucket: list[tuple[str, object]] = []
    size = 0

    def flush() -> None:
        nonlocal bucket, size
        if not bucket:
            return
        path = out_dir / f"bucket_{len(paths):05d}.safetensors"
        save_file({n: t.detach().contiguous().cpu() for n, t in bucket}, str(path),
                  metadata={"order": ",".join(n for n, _ in bucket)})
        paths.append(str(path))
        sums.append(tensors_checksum(bucket))
        names.append([n for n, _ in bucket])
        bucket, size = [], 0

    for name, t in named:
        if is_probed(name):
            probe[name] = tensor_digest(name, t)
        bucket.append((name, t))
        size += t.numel() * t.element_size()
        if size >= bucket_bytes:
            flush()
    flush()
    return WeightUpdate(version=version, bucket_paths=paths, checksums=sums, names=names,
                        probe=combine(probe) if probe else "", probe_names=sorted(probe))


def read_buckets(update: WeightUpdate) -> Iterator[tuple[str, "object"]]:
    """Yield (name, tensor) from each bucket after verifying its checksum; WeightSyncError if not."""
    from safetensors.torch import load_file

    for path, want in zip(update.bucket_paths, update.checksums, strict=True):
        try:
            tensors = load_file(path)
        except Exception as e:  # a truncated file fails to parse: report it as a sync error
            raise WeightSyncError(f"weight bucket {path} (version {update.version}) is unreadable: {e}") from e
        # safetensors returns a dict; keep the sender's order for the checksum.
        order = _order_in_file(path, tensors)
        got = tensors_checksum((n, tensors[n]) for n in order)
        if got != want:
            raise WeightSyncError(
                f"weight bucket {path} (version {update.version}) failed its checksum: "
                f"sent {want[:12]}, received {got[:12]}"
            )
        for n in order:
            yield n, tensors[n]


def _order_in_file(path: str, tensors: dict) -> list[str]:
    """Tensor names in the order they were written (safetensors sorts by offset)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    order = meta.get("order")
    return order.split(",") if order else list(tensors)


def remove_update(update: WeightUpdate) -> None:
    """Delete the bucket files of an update once every worker has loaded it."""
    dirs = {Path(p).parent for p in update.bucket_paths}
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
