"""Reuse of a used container (sandboxes/reuse.py): what a use leaves behind is gone for the next
user, and what the reset cannot prove equal makes the pool start a fresh container instead."""

from __future__ import annotations

import time

import pytest

from iquest_rl.config.sandbox import SandboxConfig
from sandboxes.base import SandboxSpec
from sandboxes.pool import SandboxPool

from .conftest import IMAGE, WORKDIR

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def repo_image(dclient):
    """The base image with a user-owned repo at /repo, so the user's home lies outside the workdir."""
    import io

    tag = "iquest-rl/test-reuse:latest"
    dockerfile = f"FROM {IMAGE}\nRUN mkdir /repo && echo one > /repo/a.txt && chown -R 1000:1000 /repo\n"
    dclient.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, labels={"iquest-rl.test": "reuse"})
    yield tag
    dclient.images.remove(tag, force=True)


@pytest.fixture
def pool(dclient, run_id):
    p = SandboxPool(SandboxConfig(pool_size=1, max_concurrency=3, memory_mb=256, pids_limit=128),
                    client=dclient, run_id=run_id)
    yield p
    p.close()


def _use(pool, spec, cmd, settle=True):
    """(container id, stdout) of one use; waits until the pool has reset or replaced it."""
    sb = pool.acquire(spec, timeout=120)
    cid = sb.id
    out = sb.exec(cmd, timeout=30).stdout
    before = pool.stats()
    sb.close()
    if not settle:
        return cid, out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = pool.stats()
        if s["reused"] + s["not_reused"] > before["reused"] + before["not_reused"]:
            return cid, out
        time.sleep(0.05)
    raise AssertionError(f"the pool neither reused nor replaced {cid[:12]}: {pool.stats()}")


def test_a_reused_container_shows_nothing_of_its_last_use(pool):
    spec = SandboxSpec(IMAGE, workdir=WORKDIR, reusable=True)
    first, _ = _use(pool, spec, "echo used > keep.txt")
    second, snap = _use(pool, spec, "ls -A; ls -A /tmp /dev/shm /var/tmp; ipcs -m | grep -c 0x; ps -e -o comm=")
    assert second == first and pool.stats()["reused"] == 2
    assert "keep.txt" not in snap
    leave = ("mkdir -p sub/deep && echo x > sub/deep/f && chmod 000 sub; echo t > /tmp/t; echo s > /dev/shm/s; "
             "mkdir /var/tmp/mine && echo v > /var/tmp/mine/v; ipcmk -M 4096 >/dev/null; "
             "(setsid sleep 600 &); (trap '' TERM; exec sleep 601) & echo left")
    third, out = _use(pool, spec, leave)
    assert third == first and out.strip() == "left"
    fourth, after = _use(pool, spec, "ls -A; ls -A /tmp /dev/shm /var/tmp; ipcs -m | grep -c 0x; ps -e -o comm=")
    assert fourth == first and pool.stats()["reused"] == 4
    assert after == snap  # the same listing, processes and IPC count as the first reuse saw


def test_what_cannot_be_proven_equal_is_not_reused(pool, repo_image):
    spec = SandboxSpec(IMAGE, workdir=WORKDIR, reusable=True)
    a, _ = _use(pool, spec, "tar -rf /var/tmp/.iqrl-pristine.tar /etc/hostname 2>/dev/null; echo tampered")
    assert pool.stats()["not_reused"] == 1  # the archive's seal no longer matches
    b, _ = _use(pool, spec, "true")
    assert b != a

    # A FIFO in place of the archive: no reuse, and no reset waiting on it.
    t0 = time.monotonic()
    fifo, _ = _use(pool, spec, "rm -f /var/tmp/.iqrl-pristine.tar && mkfifo /var/tmp/.iqrl-pristine.tar")
    assert time.monotonic() - t0 < 30 and pool.stats()["not_reused"] == 2

    # A file of the image that the user may change outside the workdir (its home) is not restored:
    # changed, it means no reuse; new files there are removed.
    repo = SandboxSpec(repo_image, workdir="/repo", reusable=True)
    c, _ = _use(pool, repo, "echo x > /home/agent/.new; echo two > a.txt")
    c2, home = _use(pool, repo, "ls -A /home/agent; cat a.txt; echo changed >> /home/agent/.profile")
    assert c2 == c and ".new" not in home and "one" in home
    d, profile = _use(pool, repo, "cat /home/agent/.profile")
    assert d != c and "changed" not in profile and pool.stats()["not_reused"] == 3

    # Programs planted in a PATH directory the user may create: the checks do not run them, and the
    # plant is gone for the next user (removed by the reset, or a fresh container).
    path = {"PATH": "/home/agent/.local/bin:/usr/local/bin:/usr/bin:/bin"}
    planted = SandboxSpec(repo_image, workdir="/repo", reusable=True, env=path)
    # (A find that hides the plant, as the checks would see it; a python3 that fakes results.)
    plant = ("d=/home/agent/.local/bin; mkdir -p $d && "
             "printf '%s\\n' '#!/bin/sh' '/usr/bin/find \"$@\" | grep -v /home/agent/.local' 'exit 0' > $d/find && "
             "printf '%s\\n' '#!/bin/sh' 'echo planted' > $d/python3 && chmod +x $d/find $d/python3 && echo ok")
    _, out = _use(pool, planted, plant)
    assert out.strip() == "ok"
    _, after = _use(pool, planted, "python3 -c 'print(1)'; command -v find; ls -A /home/agent")
    assert "planted" not in after and ".local" not in after, after

    # Root (even without capabilities) may change nearly every file of the image: never reused.
    root = SandboxSpec(IMAGE, workdir="/srv", user="0:0", reusable=True)
    counts = pool.stats()
    e, _ = _use(pool, root, "echo changed >> /etc/issue", settle=False)
    f, issue = _use(pool, root, "cat /etc/issue", settle=False)
    assert e != f and "changed" not in issue
    assert pool.stats()["reused"] == counts["reused"]


def test_agent_specs_are_never_reused(pool):
    spec = SandboxSpec(IMAGE, workdir=WORKDIR)
    ids = set()
    for _ in range(3):
        sb = pool.acquire(spec, timeout=120)
        ids.add(sb.id)
        sb.close()
    assert len(ids) == 3 and pool.stats()["reused"] == 0
