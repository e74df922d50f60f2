"""Tar archives for put_archive/get_archive: build them with chosen ownership, read them safely.

Archives coming out of a sandbox are untrusted (the agent controls symlinks and names), so they are
extracted with tarfile's "data" filter: absolute paths, links leaving the destination and device
files are skipped (logged), never written.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import time

log = logging.getLogger(__name__)


def parse_user(user: str) -> tuple[int, int]:
    """"1000:1000" -> (1000, 1000); "1000" -> (1000, 1000); a user *name* -> (0, 0), root-owned."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit():
        return 0, 0
    return int(uid), int(gid) if gid.isdigit() else int(uid)


def file_tar(name: str, data: bytes, mode: int, uid: int, gid: int) -> bytes:
    """A tar holding one regular file `name` (a base name) with the given mode and owner."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, time.time()
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def path_tar(src: str, arcname: str, uid: int, gid: int) -> bytes:
    """A tar of host file or directory `src` stored as `arcname`, every entry owned by uid:gid."""
    if not os.path.exists(src):
        raise FileNotFoundError(f"copy_in source {src} does not exist")

    def own(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=arcname, recursive=True, filter=own)
    return buf.getvalue()


def single_file(tar_bytes: bytes, where: str) -> bytes:
    """Contents of the one regular file in a get_archive tar; `where` names it in errors."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
        first = tar.next()
        if first is None:
            raise FileNotFoundError(f"{where}: empty archive")
        if first.isdir():
            raise IsADirectoryError(f"{where} is a directory")
        if not first.isfile():
            raise OSError(f"{where} is not a regular file (a {_kind(first)})")
        f = tar.extractfile(first)
        assert f is not None
        return f.read()


def extract_to(tar_bytes: bytes, dest: str) -> None:
    """Place the archive's top-level entry (file or directory) at host path `dest`."""
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".copy_out-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
            members = tar.getmembers()
            if not members:
                raise FileNotFoundError(f"copy_out to {dest}: empty archive")
            top = members[0].name.split("/", 1)[0]
            tar.extractall(tmp, filter=_safe)
        src = posixpath.join(tmp, top)
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            os.remove(dest)
        os.replace(src, dest)


def _safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, skipping (not failing on) members it refuses, e.g. a symlink to an
    absolute path: the rest of a repo still comes out, the unsafe entry does not."""
    try:
        return tarfile.data_filter(member, path)
    except tarfile.FilterError as e:
        log.warning("copy_out: skipped %s: %s", member.name, e)
        return None


def _kind(info: tarfile.TarInfo) -> str:
    return "symlink" if info.issym() else "link" if info.islnk() else "special file"
