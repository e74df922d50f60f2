"""Container ownership labels and garbage collection of containers whose owner is gone.

Every container we create carries:
  iquest-rl.sandbox=1           marks it ours (gc never looks at anything else)
  iquest-rl.run_id              the run that created it (IQUEST_RL_RUN_ID, else a per-process id)
  iquest-rl.owner_host          hostname of the creating process
  iquest-rl.owner_pid           pid of the creating process
  iquest-rl.owner_start         that process's start time (clock ticks since boot), so a reused pid
                                does not keep an orphan alive
  iquest-rl.created             unix time of creation

`gc` removes containers whose owner on this host is dead (or all of one run id); `reconcile` is
called at run start and exit; `gc_main` backs `iquest-rl sandbox gc`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import uuid

LABEL = "iquest-rl.sandbox"
RUN_ID = "iquest-rl.run_id"
OWNER_HOST = "iquest-rl.owner_host"
OWNER_PID = "iquest-rl.owner_pid"
OWNER_START = "iquest-rl.owner_start"
CREATED = "iquest-rl.created"

_adhoc_run_id = f"adhoc-{uuid.uuid4().hex[:12]}"


def current_run_id() -> str:
    """IQUEST_RL_RUN_ID when set (the controller sets it), else an id unique to this process."""
    return os.environ.get("IQUEST_RL_RUN_ID") or _adhoc_run_id


def process_start_ticks(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels(run_id: str | None = None) -> dict[str, str]:
    """The labels that tie a new container to this process and run."""
    pid = os.getpid()
    return {
        LABEL: "1",
        RUN_ID: run_id or current_run_id(),
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(pid),
        OWNER_START: process_start_ticks(pid) or "",
        CREATED: f"{time.time():.3f}",
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """Is the process that created a container (per its labels) still running on this host?

    Containers owned by another host are reported alive: we cannot see that host's processes.
    """
    if labels.get(OWNER_HOST) != socket.gethostname():
        return True
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return False  # unlabelled owner: nobody can ever clean it up but gc
    start = process_start_ticks(pid)
    if start is None:
        if os.path.isdir("/proc"):
            return False
        try:  # no procfs (macOS client): fall back to a signal-0 probe
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    expected = labels.get(OWNER_START)
    return not expected or expected == start


def list_ours(client, run_id: str | None = None) -> list:
    """Containers (any state) with our label, optionally of one run id."""
    filters = [f"{LABEL}=1"] + ([f"{RUN_ID}={run_id}"] if run_id else [])
    return client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)


def gc(client=None, run_id: str | None = None, dry_run: bool = False) -> list[str]:
    """Remove our containers whose owner process on this host is dead, or (with `run_id`) every
    container of that run regardless of owner. Returns the names of the containers removed."""
    import docker.errors

    if client is None:
        from .engine import docker_client
        client = docker_client()
    removed = []
    for c in list_ours(client, run_id):
        labels = c.labels or {}
        if run_id is None and owner_alive(labels):
            continue
        if not dry_run:
            try:
                client.api.remove_container(c.id, force=True, v=True)
            except docker.errors.NotFound:
                pass  # removed concurrently (its owner's close(), another gc)
        removed.append(c.name)
    return removed


def reconcile(run_id: str, client=None) -> list[str]:
    """Call at run start and exit: remove every container of `run_id` (left by a previous attempt of
    the same run, or not closed at exit) and every container whose owner on this host died."""
    return gc(client, run_id=run_id) + gc(client)


def gc_main(argv: list[str] | None = None) -> int:
    """`iquest-rl sandbox gc [--run-id ID] [--dry-run] [--docker-host URL]`; prints one line per
    container removed and a summary. Exit status 0, or 1 when the engine is unreachable."""
    from .base import SandboxInfraError
    from .engine import docker_client

    p = argparse.ArgumentParser(prog="iquest-rl sandbox gc",
                                description="Remove sandbox containers whose owner process died.")
    p.add_argument("--run-id", help="remove every container of this run id, whoever owns it")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--docker-host", help="engine URL (default: DOCKER_HOST or the local socket)")
    args = p.parse_args(argv)
    try:
        client = docker_client(args.docker_host)
        removed = gc(client, run_id=args.run_id, dry_run=args.dry_run)
    except SandboxInfraError as e:
        print(f"sandbox gc: {e}", file=sys.stderr)
        return 1
    verb = "would remove" if args.dry_run else "removed"
    for name in removed:
        print(f"{verb} {name}")
    print(f"sandbox gc: {verb} {len(removed)} container(s)")
    return 0
