"""Stop the real Docker daemon (SIGSTOP) for a while once a marker command runs in a container,
then continue it (SIGCONT). The daemon's containers keep running: only the engine stalls.

Needs the daemon on this host and permission to signal it (root, as `make test` runs dockerd). A
detached watchdog continues the daemon even if the test process dies while it is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


def dockerd_pid() -> int:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        pytest.skip(f"the engine is remote (DOCKER_HOST={host}): its daemon cannot be stopped from here")
    pidfile = Path("/var/run/docker.pid")
    pid = int(pidfile.read_text().strip()) if pidfile.exists() else 0
    if not pid:
        out = subprocess.run(["pgrep", "-o", "-x", "dockerd"], capture_output=True, text=True).stdout.strip()
        pid = int(out or 0)
    if not pid:
        pytest.fail("no local dockerd process found (pid file /var/run/docker.pid, pgrep dockerd)")
    try:
        os.kill(pid, 0)
    except PermissionError:
        pytest.fail(f"no permission to signal dockerd (pid {pid}): run the tests as the user that runs it")
    return pid


def _running(marker: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes().replace(b"\0", b" "):
                return True
        except OSError:
            continue
    return False


@contextlib.contextmanager
def daemon_stopped_when(marker: str, stop_s: float, wait_s: float = 60.0):
    """While the block runs: once a process whose command line contains `marker` appears on this
    host, stop dockerd for `stop_s` seconds. Yields a dict; "stopped_at" is set when it happened."""
    pid = dockerd_pid()
    info: dict = {}
    watchdog = subprocess.Popen(["sh", "-c", f"sleep {stop_s + wait_s + 30}; kill -CONT {pid}"],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stopper() -> None:
        deadline = time.monotonic() + wait_s
        while not _running(marker):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)
        info["stopped_at"] = time.monotonic()
        try:
            time.sleep(stop_s)
        finally:
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        thread.join(timeout=stop_s + wait_s + 5)
        os.kill(pid, signal.SIGCONT)
        watchdog.kill()
