"""Fixtures for the sandbox runtime tests: an engine client, a run id per module whose
containers are removed (and counted as leaks) at teardown, and a sandbox factory."""

from __future__ import annotations

import uuid

import pytest

from iquest_rl.config.sandbox import SandboxConfig
from sandboxes.base import SandboxSpec
from sandboxes.docker_backend import DockerSandbox
from sandboxes.engine import docker_client
from sandboxes.lifecycle import gc

IMAGE = "iquest-rl/base:bookworm"
WORKDIR = "/home/agent"


@pytest.fixture(scope="session")
def dclient():
    """The engine; a missing engine or image is an error, never a skip."""
    client = docker_client()
    client.images.get(IMAGE)  # ImageNotFound: build it with sandboxes/images/bootstrap_base.sh
    return client


@pytest.fixture(scope="module")
def run_id(dclient):
    rid = f"test-{uuid.uuid4().hex[:12]}"
    yield rid
    leaked = gc(dclient, run_id=rid)
    assert not leaked, f"containers of run {rid} were not closed by their tests: {leaked}"


@pytest.fixture
def make_sb(dclient, run_id):
    """make_sb(**SandboxConfig fields) -> a started DockerSandbox, closed at teardown."""
    made: list[DockerSandbox] = []

    def make(workdir: str = WORKDIR, **cfg) -> DockerSandbox:
        config = SandboxConfig(**{"memory_mb": 256, "pids_limit": 128, "exec_timeout_s": 30, **cfg})
        sb = DockerSandbox(SandboxSpec(IMAGE, workdir=workdir), config, client=dclient, run_id=run_id)
        made.append(sb)
        sb.start()
        return sb

    yield make
    for sb in made:
        sb.close()


@pytest.fixture(scope="module")
def shared_sb(dclient, run_id):
    """One default-config sandbox for read-only checks within a module."""
    sb = DockerSandbox(SandboxSpec(IMAGE, workdir=WORKDIR), SandboxConfig(memory_mb=256, exec_timeout_s=30),
                       client=dclient, run_id=run_id)
    with sb:
        yield sb
