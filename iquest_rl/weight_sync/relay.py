"""Weight sync across nodes: a rollout worker on another node than learner rank 0 cannot read the
bucket files in that node's shared memory, so it pulls them.

Each bucket's bytes travel through Ray's object store from learner rank 0 (`LearnerWorker.bucket_bytes`
serves its own files, nothing else) and are written into this node's transport root; the copy is
then loaded exactly like local buckets. The checksums were computed by the sender over the file it
wrote, so a bucket damaged or cut short on the way fails them and the previous weights are kept.
Two buckets are in flight at a time: one is written while the next travels. Each worker pulls into
its own folder (workers on one node would otherwise rewrite files another's engine has mapped) and
keeps one version there: the previous one is deleted once the next is written.
"""

from __future__ import annotations

import mmap
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .buckets import WeightSyncError, WeightUpdate, default_root

IN_FLIGHT = 2
"""Buckets requested ahead of the one being written."""
PULL_TIMEOUT_S = 600.0
"""Seconds one bucket may take to arrive (the learner serves it between its own calls)."""


def serve_bucket(path: str, root: str | Path) -> Any:
    """The bytes of bucket file `path` as a uint8 array over a read-only map of it (Ray copies it
    into the object store once). Only a file under `root`, the sender's transport root, is served."""
    import numpy as np

    if not root:
        raise WeightSyncError(f"weight relay: {path} asked for before this learner exported any weights")
    base = Path(root).resolve()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(base):  # what was opened, links resolved
            raise WeightSyncError(f"weight relay: {path} is not a bucket file of this learner (under {base})")
        size = os.fstat(fd).st_size
        if size == 0:
            return np.empty(0, dtype=np.uint8)
        return np.frombuffer(mmap.mmap(fd, size, prot=mmap.PROT_READ), dtype=np.uint8)
    finally:
        os.close(fd)


class Relay:
    """Copies the bucket files of updates written on another node into this node's transport root."""

    def __init__(self, node_id: str, worker: str, root: str | Path | None = None) -> None:
        """node_id: this worker's Ray node ("" outside Ray: every update is taken as local); worker:
        an id of the worker that a restart keeps (its Ray actor id); root: the worker's own folder
        (default: relay-<worker> under the run's transport root). The folder is emptied here: what an
        earlier life of the worker pulled is deleted."""
        self.node_id = node_id
        self.root = Path(root) if root is not None else default_root() / f"relay-{worker[:16]}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.dir: Path | None = None
        """Where the last pulled version's files are."""
        self.nbytes = 0
        """Bytes pulled so far."""

    def localize(self, update: WeightUpdate, fetch: Callable[[str], Any] | None = None) -> WeightUpdate:
        """`update` itself when it was written on this node (or its origin is unknown), else a copy
        whose bucket_paths point at pulled files. fetch(path) -> an ObjectRef of serve_bucket's
        array (default: ask the update's source actor). Raises WeightSyncError naming the bucket."""
        if not update.origin or not self.node_id or update.origin == self.node_id:
            return update
        import ray

        if fetch is None:
            from iquest_rl.actors.learner import NAMESPACE

            try:
                source = ray.get_actor(update.source, namespace=NAMESPACE)
            except ValueError as e:
                raise WeightSyncError(f"weight relay: v{update.version} was written by {update.source!r} on node "
                                      f"{update.origin[:12]}, which is gone: {e}") from e
            fetch = source.bucket_bytes.remote
        out = self.root / f"v{update.version}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        paths = update.bucket_paths
        refs = [fetch(p) for p in paths[:IN_FLIGHT]]
        local = []
        try:
            for i, path in enumerate(paths):
                if i + IN_FLIGHT < len(paths):
                    refs.append(fetch(paths[i + IN_FLIGHT]))
                try:
                    data = ray.get(refs[i], timeout=PULL_TIMEOUT_S)
                except Exception as e:  # noqa: BLE001 - the sender died, or the file went
                    raise WeightSyncError(f"weight relay: could not pull bucket {i} ({path}) of v{update.version} "
                                          f"from {update.source} on node {update.origin[:12]}: {e}") from e
                refs[i] = None  # the object store may drop it
                dst = out / Path(path).name
                with open(dst, "wb") as f:
                    f.write(memoryview(data))
                self.nbytes += len(data)
                local.append(str(dst))
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        if self.dir is not None and self.dir != out:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = out
        return replace(update, bucket_paths=local)

    def clear(self) -> None:
        """Delete every pulled file (at shutdown)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.dir = None
