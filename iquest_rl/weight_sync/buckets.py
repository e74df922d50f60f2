"""CPU transport: weights travel as bucket files in shared memory, each with a checksum.

The learner writes buckets (one file per ~sync_bucket_mb), the rollout worker verifies each bucket's
checksum before loading any of them, so a corrupted or truncated bucket is detected rather than served.
Tensors cannot be passed as collective_rpc arguments (they arrive as lists), hence files.

A bucket file has the safetensors layout (8-byte little-endian header length, JSON header, raw tensor
bytes, larger elements first), so `safetensors.safe_open` reads it, but it is written and read with
shared memory maps: each tensor's bytes are copied from the learner's memory into the file once, and the
reader hashes the file in place and hands out views of it (the engine's loader copies them into its own
tensors). The checksum is XXH3-128 over the whole file (header included, so names, shapes and the
version stamp are covered), computed on the sender chunk by chunk right after each chunk is copied
(still in cache), and on the receiver over the mapped file before any tensor is handed out.
Files of updates no longer needed are recycled (`remove_update` -> spare pool -> next `BucketWriter`),
and both sides keep their maps of a file across updates (`FileMaps`, keyed by inode, which a rename
keeps): rewriting or re-reading an allocated, already-mapped tmpfs file costs a memcpy or a hash pass;
a fresh file costs page allocation, and a fresh map a page-table fill per 4 KiB (about two memcpys).
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

CHECKSUM_PREFIX = "xxh3-128:"
CHUNK = 1 << 20
"""Bytes hashed then written (or read then hashed) at a time: the chunk is still in the L2 cache
for the second pass, and ~1 MiB syscalls were faster here than one call per tensor or file."""
SPARE_DIR = ".spare"
"""Directory under the transport root holding recycled bucket files of removed updates."""
_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
           "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
           "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
"""torch dtype name -> safetensors dtype tag."""


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
    sizes: list[int] = field(default_factory=list)
    """Byte size of each bucket file; a file of another size is reported unreadable (truncated or
    appended to) before its checksum is computed. Empty = sizes not checked."""
    origin: str = ""
    """The Ray node whose shared memory holds the bucket files; a receiver on another node pulls
    them from `source` first (weight_sync.relay). Empty = the receiver's own node."""
    source: str = ""
    """Name of the actor that wrote the files and serves them (learner rank 0)."""


def default_root() -> Path:
    """Shared memory (else /tmp), one folder per run: concurrent runs must not overwrite each other's v<N>."""
    shm = Path("/dev/shm")
    base = (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")) / "iquest-rl-weights"
    return base / os.environ.get("IQUEST_RL_RUN_ID", "default")


def checksum(buf: Any) -> str:
    """XXH3-128 of a bytes-like object (the whole bucket file), as "xxh3-128:<hex>".

    A 128-bit hash over every byte: a flipped byte, swapped or shifted blocks and truncation all change
    it (tests/unit/weight_sync/test_checksum.py). It hashes faster than a memcpy of the same bytes;
    sha256 was about 7x slower than the memcpy and the largest part of the sync time.
    """
    import xxhash

    return CHECKSUM_PREFIX + xxhash.xxh3_128(buf).hexdigest()


def tensor_uint8(t: Any) -> Any:
    """The raw bytes of a tensor as a flat uint8 CPU tensor (a view when it is contiguous on the CPU)."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def bucket_layout(named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The order tensors are laid out in a bucket: larger elements first (stable), so with the data
    starting 8-aligned every tensor starts at a multiple of its element size and reads back as a view."""
    return sorted(named, key=lambda nt: -nt[1].element_size())


def bucket_header(named: list[tuple[str, Any]], version: int) -> bytes:
    """safetensors header of a bucket: 8-byte length + JSON (tensor dtype/shape/data_offsets laid out
    as `bucket_layout`, metadata "order" = the given order and "version"), padded with spaces so the
    data starts at a multiple of 8."""
    meta: dict[str, Any] = {"__metadata__": {"order": ",".join(n for n, _ in named), "version": str(version)}}
    offset = 0
    for name, t in bucket_layout(named):
        nbytes = t.numel() * t.element_size()
        tag = _DTYPES.get(str(t.dtype).removeprefix("torch."))
        if tag is None:
            raise WeightSyncError(f"weight bucket: tensor {name} has dtype {t.dtype}, which has no safetensors tag")
        meta[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    body = json.dumps(meta, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


class BucketWriter:
    """Writes one update's buckets under <root>/v<version>/, reusing spare files when there are any.

    `write(named)` writes one bucket and returns its checksum; `finish()` returns the WeightUpdate.
    The tensors passed to `write` are read once, during the call (they may be views into gathered
    parameters that are freed afterwards).
    """

    def __init__(self, root: str | Path, version: int) -> None:
        self.root, self.version = Path(root), version
        self.dir = self.root / f"v{version}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.paths: list[str] = []
        self.checksums: list[str] = []
        self.names: list[list[str]] = []
        self.sizes: list[int] = []
        self.probe: dict[str, str] = {}
        self.nbytes = 0
        self._spares = _spares(self.root)

    def write(self, named: list[tuple[str, Any]]) -> str:
        import xxhash

        from .fingerprint import is_probed, tensor_digest

        if not named:
            return ""
        header = bucket_header(named, self.version)
        size = len(header) + sum(t.numel() * t.element_size() for _, t in named)
        path = self.dir / f"bucket_{len(self.paths):05d}.safetensors"
        self._open_target(path, size)
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)  # a new file, or a recycled one of another size
            buf = WRITE_MAPS.view(fd, size, writable=True)
        finally:
            os.close(fd)
        buf[:len(header)].numpy()[:] = memoryview(header)
        h = xxhash.xxh3_128(header)
        offset = len(header)
        for name, t in bucket_layout(named):
            data = tensor_uint8(t)
            n = data.numel()
            for i in range(0, n, CHUNK):
                dst = buf[offset + i:offset + min(i + CHUNK, n)]
                dst.copy_(data[i:i + CHUNK])
                h.update(dst.numpy())  # what the file now holds, while it is in cache
            offset += n
            if is_probed(name):
                self.probe[name] = tensor_digest(name, t)
        self.paths.append(str(path))
        self.checksums.append(CHECKSUM_PREFIX + h.hexdigest())
        self.names.append([n for n, _ in named])
        self.sizes.append(size)
        self.nbytes += size - len(header)
        return self.checksums[-1]

    def finish(self) -> WeightUpdate:
        """The update written so far; spare files left unused are deleted (they only hold memory)."""
        from .fingerprint import combine

        for spare in self._spares:
            spare.unlink(missing_ok=True)
        self._spares = []
        WRITE_MAPS.prune()
        return WeightUpdate(version=self.version, bucket_paths=self.paths, checksums=self.checksums,
                            names=self.names, probe=combine(self.probe) if self.probe else "",
                            probe_names=sorted(self.probe), sizes=self.sizes)

    def _open_target(self, path: Path, size: int) -> None:
        """Move the best-fitting spare file to `path` (smallest one >= size, else the largest), or create it."""
        while self._spares:
            fits = [s for s in self._spares if _size(s) >= size]
            spare = min(fits, key=_size) if fits else max(self._spares, key=_size)
            self._spares.remove(spare)
            try:
                os.rename(spare, path)  # atomic: another writer sharing the root cannot take it too
                return
            except FileNotFoundError:
                continue
        path.touch()


def write_buckets(named: Iterable[tuple[str, Any]], out_dir: str | Path, version: int,
                  bucket_bytes: int) -> WeightUpdate:
    """Split tensors into buckets of about bucket_bytes and write them under out_dir/v<version>/."""
    writer = BucketWriter(out_dir, version)
    bucket: list[tuple[str, Any]] = []
    size = 0
    for name, t in named:
        bucket.append((name, t))
        size += t.numel() * t.element_size()
        if size >= bucket_bytes:
            writer.write(bucket)
            bucket, size = [], 0
    writer.write(bucket)
    return writer.finish()


class FileMaps:
    """Shared memory maps of bucket files kept across updates, keyed by (device, inode).

    A recycled bucket file keeps its inode through `remove_update` and the next writer's rename, so
    the map made for it once serves every later update written into it: reading or writing it then
    touches memory that is already mapped (a fresh map costs a page-table fill per 4 KiB, about two
    memcpys of the file). While a map is held its inode cannot be reused, so the key is unambiguous.
    A map is made again when the file's size changed; `prune` drops the maps of deleted files (they
    hold the file's memory until then). Views handed out stay valid while anyone holds them. A file
    must not be truncated while it is read through a map (that faults): bucket files are rewritten
    only after their update is retired (`remove_update`), when no reader uses them any more.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int], tuple[int, Any, Any, bool]] = {}
        """(st_dev, st_ino) -> (a duplicate fd of the file, the mmap, a uint8 tensor over all of it, writable)."""

    def view(self, fd: int, size: int, writable: bool = False) -> Any:
        """A uint8 tensor over the whole file behind `fd` (`size` bytes, checked by the caller)."""
        import torch

        if size == 0:
            return torch.empty(0, dtype=torch.uint8)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        entry = self.entries.get(key)
        if entry is not None and entry[2].numel() == size and entry[3] >= writable:
            return entry[2]
        self._drop(key)
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=prot)
        with warnings.catch_warnings():
            # A read-only map: tensors over it must not be written to (a write would fault).
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.frombuffer(mm, dtype=torch.uint8)
        self.entries[key] = (os.dup(fd), mm, tensor, writable)
        return tensor

    def ranges(self) -> list[tuple[int, int]]:
        """[start, end) addresses of the mapped files (to check that nobody kept a view)."""
        return [(t.data_ptr(), t.data_ptr() + t.numel()) for _, _, t, _ in self.entries.values()]

    def prune(self) -> None:
        """Drop the maps of files that were deleted (so their memory is released)."""
        for key, (fd, *_) in list(self.entries.items()):
            try:
                gone = os.fstat(fd).st_nlink == 0
            except OSError:
                gone = True
            if gone:
                self._drop(key)

    def clear(self) -> None:
        for key in list(self.entries):
            self._drop(key)

    def __del__(self) -> None:
        try:
            self.clear()
        except Exception:  # interpreter shutdown: os may be gone
            pass

    def _drop(self, key: tuple[int, int]) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            os.close(entry[0])  # the map itself goes when its last view does


WRITE_MAPS = FileMaps()
"""The writer's maps (one learner process writes every update of its run)."""


def read_buckets(update: WeightUpdate, maps: FileMaps | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (name, tensor) from each bucket after verifying its checksum; WeightSyncError if not.

    The tensors are read-only views of the bucket files (mapped in `maps`; a reader that keeps one
    FileMaps across updates re-reads recycled files through maps it already has): copy them before the
    update is retired (its files are then rewritten), and never write to them. Verify everything
    before loading any of it by materialising the iterator (`list(read_buckets(...))`).
    """
    maps = maps if maps is not None else FileMaps()
    maps.prune()
    sizes = update.sizes or [None] * len(update.bucket_paths)
    for path, want, size in zip(update.bucket_paths, update.checksums, sizes, strict=True):
        buf, got = _read_file(path, update.version, maps, size)
        if got != want:
            raise WeightSyncError(
                f"weight bucket {path} (version {update.version}) failed its checksum: "
                f"sent {want[:21]}, received {got[:21]}"
            )
        yield from _parse(buf, path, update.version)


def _read_file(path: str, version: int, maps: FileMaps, want_size: int | None) -> tuple[Any, str]:
    """(the mapped file as a uint8 tensor, its checksum). The size is checked before the map is
    touched, so a truncated file is reported, not read past its end."""
    def unreadable(why: str) -> WeightSyncError:
        return WeightSyncError(f"weight bucket {path} (version {version}) is unreadable: {why}")

    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if want_size is not None and size != want_size:
                raise unreadable(f"{size} bytes, {want_size} were written (truncated or overwritten)")
            buf = maps.view(fd, size)
        finally:
            os.close(fd)
    except OSError as e:
        raise unreadable(str(e)) from e
    return buf, checksum(buf.numpy() if buf.numel() else b"")


def _parse(buf: Any, path: str, version: int) -> list[tuple[str, Any]]:
    """Tensors of a verified bucket (views into buf), in the order they were written."""
    import torch

    def bad(why: str) -> WeightSyncError:
        return WeightSyncError(f"weight bucket {path} (version {version}) is unreadable: {why}")

    if buf.numel() < 8:
        raise bad(f"{buf.numel()} bytes, shorter than the header length")
    hlen = struct.unpack("<Q", bytes(buf[:8].numpy()))[0]
    if 8 + hlen > buf.numel():
        raise bad(f"header of {hlen} bytes but the file has {buf.numel()}")
    try:
        meta = json.loads(bytes(buf[8:8 + hlen].numpy()))
    except ValueError as e:
        raise bad(f"header is not JSON ({e})") from e
    order = meta.pop("__metadata__", {}).get("order", "")
    names = order.split(",") if order else sorted(meta, key=lambda n: meta[n]["data_offsets"][0])
    tags = {v: k for k, v in _DTYPES.items()}
    data = buf[8 + hlen:]
    out = []
    for name in names:
        entry = meta[name]
        begin, end = entry["data_offsets"]
        if end > data.numel():
            raise bad(f"tensor {name} ends at byte {end} of {data.numel()}")
        out.append((name, data[begin:end].view(getattr(torch, tags[entry["dtype"]])).view(entry["shape"])))
    return out


def remove_update(update: WeightUpdate) -> None:
    """Retire the bucket files of an update once every worker has loaded it: they move to the root's
    spare pool, where the next BucketWriter reuses them (and deletes those it does not need)."""
    dirs = {Path(p).parent for p in update.bucket_paths}
    for p in update.bucket_paths:
        spare = Path(p).parent.parent / SPARE_DIR
        spare.mkdir(exist_ok=True)
        try:
            os.rename(p, spare / f"v{update.version}-{Path(p).name}")
        except FileNotFoundError:
            pass
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def clear_spares(root: str | Path | None = None) -> None:
    """Delete the spare pool under `root` (default_root() when None): what a run leaves in memory."""
    shutil.rmtree(Path(root or default_root()) / SPARE_DIR, ignore_errors=True)


def _spares(root: Path) -> list[Path]:
    d = root / SPARE_DIR
    return [p for p in d.iterdir() if p.is_file()] if d.is_dir() else []


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return -1
