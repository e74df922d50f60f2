"""Task images, built offline from a task directory and cached by a hash of its content.

An image is rebuilt only when the hash of its build context (every file's path, mode and bytes,
plus the Dockerfile as rewritten here) differs from the `iquest-rl.content_hash` label of the
image already on the engine. `FROM` lines may be rewritten through a base-image map so that task
Dockerfiles written for public images (python:3.13-slim, ghcr.io/...) build from the local base
image with no registry access.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tarfile
import threading

from ..base import SandboxInfraError

log = logging.getLogger(__name__)

HASH_LABEL = "iquest-rl.content_hash"
KIND_LABEL = "iquest-rl.task_image"
"""Label on every task image (value: the task family), so they can be listed and removed."""
DEFAULT_BASE = "iquest-rl/base:bookworm"

_FROM = re.compile(r"^(\s*FROM\s+)(?:--platform=\S+\s+)?(\S+)(.*)$", re.IGNORECASE | re.MULTILINE)
_build_lock = threading.Lock()


def rewrite_from(dockerfile: str, base_map: dict[str, str], default: str | None = None) -> str:
    """Replace the image of each FROM line via `base_map` (exact name, or name without tag);
    images not in the map become `default` when given, else stay. Stage names are kept."""
    stages: set[str] = set()

    def sub(m: re.Match) -> str:
        image, rest = m.group(2), m.group(3)
        alias = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
        if alias:
            stages.add(alias.group(1).lower())
        if image.lower() in stages:
            return m.group(0)  # FROM <earlier stage>
        new = base_map.get(image) or base_map.get(image.split(":")[0]) or default or image
        return f"{m.group(1)}{new}{rest}"

    return _FROM.sub(sub, dockerfile)


def context_files(context_dir: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Sorted (relative path, absolute path) of regular files under `context_dir`, minus `exclude`
    (relative paths or directory prefixes)."""
    out = []
    for root, dirs, files in os.walk(context_dir):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, context_dir)
            if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
                continue
            if "__pycache__" in rel.split(os.sep) or rel.endswith(".pyc"):
                continue
            out.append((rel, full))
    return out


def build_context(context_dir: str, dockerfile_text: str, exclude: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """(tar of the context with `dockerfile_text` as ./Dockerfile, content hash of it)."""
    h = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, full in context_files(context_dir, exclude + ("Dockerfile",)):
            with open(full, "rb") as f:
                data = f.read()
            mode = 0o755 if os.access(full, os.X_OK) else 0o644
            h.update(f"{rel}\0{mode:o}\0{len(data)}\0".encode())
            h.update(data)
            _add(tar, rel, data, mode)
        h.update(b"Dockerfile\0")
        h.update(dockerfile_text.encode())
        _add(tar, "Dockerfile", dockerfile_text.encode(), 0o644)
    return buf.getvalue(), h.hexdigest()[:16]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def ensure_image(tag: str, context_dir: str, kind: str, dockerfile: str = "Dockerfile",
                 base_map: dict[str, str] | None = None, default_base: str | None = None,
                 exclude: tuple[str, ...] = (), client=None) -> str:
    """Build `tag` from `context_dir` unless an image with the same content hash exists; returns tag.

    `dockerfile` is relative to `context_dir`. Raises SandboxInfraError naming the directory and the
    failing build step when the build fails.
    """
    from ..engine import docker_client

    client = client or docker_client()
    path = os.path.join(context_dir, dockerfile)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise FileNotFoundError(f"{context_dir}: no Dockerfile at {dockerfile}: {e}") from e
    text = rewrite_from(text, base_map or {}, default_base)
    tar, digest = build_context(context_dir, text, exclude)
    with _build_lock:  # one build per process at a time; concurrent callers then hit the cache
        if _current_hash(client, tag) == digest:
            return tag
        log.info("building %s from %s (content %s)", tag, context_dir, digest)
        try:
            stream = client.api.build(fileobj=io.BytesIO(tar), custom_context=True, tag=tag, rm=True,
                                      forcerm=True, pull=False, decode=True,
                                      labels={HASH_LABEL: digest, KIND_LABEL: kind})
            lines = []
            for chunk in stream:
                if "error" in chunk:
                    detail = "".join(lines[-20:])
                    raise SandboxInfraError(f"image build {tag} from {context_dir} failed: "
                                            f"{chunk['error'].strip()}\n{detail}")
                lines.append(chunk.get("stream", ""))
        except SandboxInfraError:
            raise
        except Exception as e:  # noqa: BLE001 - engine/transport failures of the build are infra errors
            raise SandboxInfraError(f"image build {tag} from {context_dir}: {type(e).__name__}: {e}") from e
        if _current_hash(client, tag) != digest:
            raise SandboxInfraError(f"image build {tag} from {context_dir}: finished but the image is missing")
    return tag


def _current_hash(client, tag: str) -> str | None:
    import docker.errors

    try:
        return (client.api.inspect_image(tag)["Config"].get("Labels") or {}).get(HASH_LABEL)
    except docker.errors.ImageNotFound:
        return None


def remove_task_images(kind: str | None = None, client=None) -> list[str]:
    """Remove task images (of one family, or all); returns their tags. Containers using them must be gone."""
    from ..engine import docker_client

    client = client or docker_client()
    flt = f"{KIND_LABEL}={kind}" if kind else KIND_LABEL
    removed = []
    for img in client.images.list(filters={"label": flt}):
        for tag in img.tags or [img.id]:
            client.images.remove(tag, force=True)
            removed.append(tag)
    return removed
