"""Reusing a used Docker sandbox: a reset whose result is checked against the container as it was
when fresh, so that a reused container is equivalent to a fresh one (or is not reused).

Only specs marked `SandboxSpec.reusable` take part (grading containers: the agent's never do, so no
copy of an unsanitized repository ever sits in an agent's container). The pool (sandboxes/pool.py)
calls `snapshot` once after a fresh start and `reset` on its own thread after each use.

snapshot, in the fresh container: archives the workdir (`tar --format=posix`, so file times are kept
to the nanosecond) to ARCHIVE, and records outside the container (where nothing that runs inside can
change them):
  - a digest of the workdir: every entry's type, mode, owner, size, file time, link target and the
    SHA-256 of every file's content (directory times are left out: restoring entries changes them);
  - the processes alive (docker-init and the keepalive, which run as another uid);
  - `docker diff` (the writable layer's changes against the image; the archive is one of them).

reset, after a use: kills every process of the spec's user (`kill -9 -1`; a process cannot survive
it, and the check below would see one that did), empties the workdir and extracts the archive,
empties /tmp, /dev/shm and /dev/mqueue (tmpfs: `docker diff` does not see them) and the user's SysV IPC
objects, and removes what `docker diff` shows added outside the workdir. It is proven equal, and
the container is reused, only when ALL of these hold; otherwise it is removed and a fresh one started:
  - the processes are exactly the fresh container's;
  - the workdir digest equals the fresh one (a tampered archive shows here);
  - /tmp, /dev/shm and /dev/mqueue are empty and no SysV IPC object is left;
  - `docker diff` outside the workdir equals the fresh container's, except for directories shown
    as changed (an entry was added and removed again: their entries are checked by the rest of the
    diff, their times are not compared). A file changed or deleted outside the workdir, which the
    diff cannot tell from an untouched one, means no reuse.

Not restored, and not part of "equivalent": the container's cgroup counters (CPU time used, peak
memory), the kernel's page cache, and directory times. A container is reused at most MAX_USES times.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHIVE = "/var/tmp/.iqrl-pristine.tar"
"""Where the fresh workdir is archived inside the container (owned by the spec's user)."""
MAX_USES = 50
"""Uses of one container before it is removed anyway."""
TMPFS = ("/tmp", "/dev/shm", "/dev/mqueue")

# Shell helpers shared by both scripts. `pids` sets $out to the container's processes other than
# this shell, without forking (a pipeline or $(...) would add processes of its own).
_LIB = r"""
pids() { out=""; for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$$" ] || out="$out $p"; done; }
manifest() {
  ( cd "$1" && {
      find . -xdev \( -type f -printf 'f %m %U:%G %s %T@ %p\n' \) -o \( -type l -printf 'l %U:%G %p %l\n' \) \
           -o \( -type d -printf 'd %m %U:%G %p\n' \) -o -printf '? %y %m %U:%G %p\n'
      find . -xdev -type f -exec sha256sum {} +
    } 2>&1 | LC_ALL=C sort | sha256sum | cut -c1-64 )
}
"""

_SNAPSHOT = _LIB + r"""
set -u
w=$1 a=$2
pids; echo "pids$out"
tar --format=posix -C "$w" -cf "$a" . || exit 3
chmod 600 "$a"
echo "digest $(manifest "$w")"
"""

_RESET = _LIB + r"""
w=$1 a=$2 want=$3
shift 3
kill -9 -1 2>/dev/null
i=0
while :; do
  pids; [ "$out" = " $want" ] && break
  i=$((i + 1)); [ $i -ge 200 ] && { echo "processes left:$out (fresh:$want)"; exit 3; }
  kill -9 -1 2>/dev/null; sleep 0.01
done
chmod -R u+rwX "$w" 2>/dev/null
find "$w" -mindepth 1 -maxdepth 1 -exec rm -rf {} + || { echo "workdir $w could not be emptied"; exit 4; }
tar -C "$w" -xpf "$a" || { echo "workdir $w could not be restored from $a"; exit 5; }
for m in /tmp /dev/shm /dev/mqueue; do [ -d "$m" ] && find "$m" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null; done
ipcrm --all 2>/dev/null
[ $# -gt 0 ] && rm -rf -- "$@" 2>/dev/null
echo "digest $(manifest "$w")"
left=$(find /tmp /dev/shm /dev/mqueue -mindepth 1 -maxdepth 1 2>/dev/null | head -3 | tr '\n' ' ')
echo "left $left"
echo "ipc $(cat /proc/sysvipc/shm /proc/sysvipc/sem /proc/sysvipc/msg 2>/dev/null | grep -cv key)"
"""

_REMOVE = r'rm -rf -- "$@" 2>/dev/null; exit 0'
_NOT_DIRS = r'for p; do [ -d "$p" ] && [ ! -L "$p" ] || echo "$p"; done'


@dataclass
class Pristine:
    """What a fresh container looked like (held by the pool, outside the container)."""

    digest: str
    pids: str
    diff: frozenset
    """(path, kind) of `docker diff` outside the workdir (kind: 0 changed, 1 added, 2 deleted)."""
    uses: int = 0


def supported(sb) -> bool:
    from .docker_backend import DockerSandbox

    return isinstance(sb, DockerSandbox)


def snapshot(sb) -> Pristine:
    """Archive and fingerprint a fresh, started sandbox; raises RuntimeError when it cannot be."""
    r = sb.exec_argv(["/bin/sh", "-c", _SNAPSHOT, "sh", sb.workdir, ARCHIVE], timeout=120)
    lines = dict(_fields(r.stdout))
    if r.exit_code != 0 or "digest" not in lines or "pids" not in lines:
        raise RuntimeError(f"sandbox {sb.name}: snapshot of {sb.workdir} failed (exit {r.exit_code}): "
                           f"{(r.stdout + r.stderr).strip()[-300:]}")
    return Pristine(digest=lines["digest"], pids=lines["pids"], diff=_outside(sb, sb.workdir))


def reset(sb, p: Pristine) -> str | None:
    """Reset a used sandbox; None when it is proven equal to its fresh state, else the reason not."""
    if p.uses >= MAX_USES:
        return f"used {p.uses} times (MAX_USES)"
    if not sb.alive():
        return "container is not running"
    added = _top_level(path for path, kind in _outside(sb, sb.workdir) - p.diff if kind == 1)
    r = sb.exec_argv(["/bin/sh", "-c", _RESET, "sh", sb.workdir, ARCHIVE, p.pids, *added], timeout=120)
    got = dict(_fields(r.stdout))
    if r.exit_code != 0 or r.timed_out:
        return f"reset script failed (exit {r.exit_code}): {(r.stdout + r.stderr).strip()[-300:]}"
    if got.get("digest") != p.digest:
        return f"workdir {sb.workdir} differs from the fresh container after restoring it"
    if got.get("left", "").strip():
        return f"temporary files left: {got['left'].strip()}"
    if got.get("ipc", "0").strip() != "0":
        return f"{got['ipc'].strip()} SysV IPC objects left"
    extra = _outside(sb, sb.workdir) - p.diff
    if any(kind == 1 for _, kind in extra):  # files of another owner (the copy-in, as root)
        sb.exec_argv(["/bin/sh", "-c", _REMOVE, "sh", *_top_level(x for x, k in extra if k == 1)],
                     timeout=60, user="0:0")
        extra = _outside(sb, sb.workdir) - p.diff
    if any(kind != 0 for _, kind in extra):
        return "outside the workdir: " + ", ".join(f"{_KINDS[k]} {x}" for x, k in sorted(extra)[:5])
    changed = [x for x, _ in sorted(extra)]
    if changed:
        r = sb.exec_argv(["/bin/sh", "-c", _NOT_DIRS, "sh", *changed], timeout=60, user="0:0")
        if r.exit_code != 0 or r.stdout.strip():
            return f"files changed outside the workdir: {(r.stdout or r.stderr).split()[:5]}"
    p.uses += 1
    return None


_KINDS = {0: "changed", 1: "added", 2: "deleted"}


def _fields(text: str):
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key:
            yield key, value


def _outside(sb, workdir: str) -> frozenset:
    """`docker diff` entries that are not the workdir or inside it."""
    root = workdir.rstrip("/") or "/"
    return frozenset((d["Path"], int(d["Kind"])) for d in sb.changes()
                     if d["Path"] != root and not d["Path"].startswith(root + "/"))


def _top_level(paths) -> list[str]:
    """The paths with none of their ancestors among them (rm -rf of those removes all)."""
    ps = sorted(set(paths))
    keep: list[str] = []
    for p in ps:
        if not any(p.startswith(k.rstrip("/") + "/") for k in keep):
            keep.append(p)
    return keep
