"""Containers never outlive their owners: create/exec/close cycles leave nothing, a SIGKILLed
run's containers are collected by gc, and the pool bounds and recycles real containers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from iquest_rl.config.sandbox import SandboxConfig
from sandboxes.base import SandboxSpec
from sandboxes.docker_backend import DockerSandbox
from sandboxes.lifecycle import CREATED, OWNER_PID, RUN_ID, gc, gc_main, list_ours, reconcile
from sandboxes.pool import SandboxPool, SandboxPoolTimeout

pytestmark = pytest.mark.docker

IMAGE = "iquest-rl/base:bookworm"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _cycles(dclient, n: int) -> None:
    rid = f"cycles-{uuid.uuid4().hex[:10]}"
    try:
        for i in range(n):
            with DockerSandbox(SandboxSpec(IMAGE, workdir="/home/agent"), SandboxConfig(),
                               client=dclient, run_id=rid) as sb:
                assert sb.exec(f"echo {i}").stdout == f"{i}\n"
                if i % 4 == 3:
                    dclient.api.kill(sb.id)  # some die before close(): close() still removes them
    finally:
        left = list_ours(dclient, rid)
        gc(dclient, run_id=rid)
        assert left == [], f"{len(left)} containers left after {n} cycles"


def test_cycles_leave_no_containers(dclient):
    _cycles(dclient, 10)


@pytest.mark.slow
def test_200_cycles_leave_no_containers(dclient):
    _cycles(dclient, 200)  # how fast a cycle is belongs to sandboxes.runtimes.bench, not here


def test_killed_run_is_collected_by_gc(dclient, run_id, make_sb):
    dead_rid = f"killed-{uuid.uuid4().hex[:10]}"
    script = textwrap.dedent(f"""
        import sys, time
        from iquest_rl.config.sandbox import SandboxConfig
        from sandboxes.base import SandboxSpec
        from sandboxes.docker_backend import DockerSandbox
        for _ in range(2):
            DockerSandbox(SandboxSpec({IMAGE!r}), SandboxConfig(), run_id={dead_rid!r}).start()
        print("ready", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert proc.stdout.readline().strip() == "ready"
        orphans = list_ours(dclient, dead_rid)
        assert len(orphans) == 2 and all(c.labels[OWNER_PID] == str(proc.pid) for c in orphans)
        assert all(c.labels[RUN_ID] == dead_rid and float(c.labels[CREATED]) > 0 for c in orphans)
        mine = make_sb()  # owned by this live process: gc must leave it alone
        early = set(gc(dclient))  # both owners alive: neither theirs nor ours may go
        assert mine.name not in early and not early & {c.name for c in orphans}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        removed = gc(dclient)  # host-wide: a container some other dead owner left may go too
        assert {c.name for c in orphans} <= set(removed) and mine.name not in removed
        assert list_ours(dclient, dead_rid) == []
        assert mine.alive() and mine.exec("echo still").stdout == "still\n"
    finally:
        proc.kill()
        proc.wait()
        gc(dclient, run_id=dead_rid)


def test_gc_cli_and_reconcile(dclient, run_id, capsys):
    rid = f"recon-{uuid.uuid4().hex[:10]}"
    sbs = [DockerSandbox(SandboxSpec(IMAGE), SandboxConfig(), client=dclient, run_id=rid) for _ in range(2)]
    try:
        for sb in sbs:
            sb.start()
        assert gc_main(["--run-id", rid, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "would remove 2 container(s)" in out and all(sb.name in out for sb in sbs)
        assert len(list_ours(dclient, rid)) == 2
        # reconcile removes a run's containers even though their owner (this process) is alive.
        assert {sb.name for sb in sbs} <= set(reconcile(rid, dclient))  # plus any with a dead owner
        assert list_ours(dclient, rid) == []
        assert gc_main(["--run-id", rid]) == 0 and "removed 0 container(s)" in capsys.readouterr().out
    finally:
        for sb in sbs:
            sb.close()


def test_pool_bounds_prewarms_and_never_reuses(dclient, run_id):
    cfg = SandboxConfig(pool_size=1, max_concurrency=2)
    spec = SandboxSpec(IMAGE, workdir="/home/agent")
    with SandboxPool(cfg, client=dclient, run_id=run_id) as pool:
        pool.prewarm(spec)
        deadline = time.monotonic() + 30
        while pool.stats()["warm"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t_req = time.time()
        a = pool.acquire(spec)
        assert float(dclient.api.inspect_container(a.id)["Config"]["Labels"][CREATED]) < t_req  # was warm
        a.exec("touch /home/agent/dirty")
        b = pool.acquire(spec)
        with pytest.raises(SandboxPoolTimeout, match="max_concurrency=2"):
            pool.acquire(spec, timeout=0.5)
        used = a.id
        a.close()
        c = pool.acquire(spec, timeout=30)
        assert c.id != used and c.exec("test -e /home/agent/dirty").exit_code == 1
        b.close(), c.close()
    assert list_ours(dclient, run_id) == []
    assert pool.stats()["alive"] == 0
