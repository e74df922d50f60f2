"""Sandbox backend and isolation limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class SandboxConfig(StrictModel):
    backend: Literal["docker", "local"] = "docker"
    """docker = isolated containers; local = subprocess, NOT isolation (development only)."""
    docker_host: str | None = None
    """Docker engine URL (e.g. ssh://farm or tcp://host:2376); None = DOCKER_HOST or the local socket."""
    image: str = "iquest-rl/base:bookworm"
    """Default image when a task names none."""
    agent_user: str = Field("1000:1000", pattern=r"^\d+:\d+$")
    """uid:gid of the agent's commands (and of Terminal-Bench tests, once the agent's processes are gone);
    a cached image layer hands the task's workdir to it (sandboxes/runtimes/workdirs.py). "0:0" gives
    root without capabilities, as Terminal-Bench runs agents: the agent may then change what tests load."""
    base_map: dict[str, str] = Field(default_factory=dict)
    """FROM image of task Dockerfiles (name with or without tag) -> local image, over the defaults
    (sandboxes/runtimes/images.py DEFAULT_BASE_MAP); {} = the defaults only."""
    network: bool = False
    """Give containers a network; False = network_mode none."""
    memory_mb: int = Field(2048, ge=64, le=1 << 20)
    """Memory limit in MiB, swap disabled."""
    cpus: float = Field(1.0, gt=0, le=1024)
    """CPU quota in cores."""
    pids_limit: int = Field(512, ge=16, le=1 << 22)
    """Max processes per container (fork-bomb guard); at most the kernel's pid limit."""
    disk_mb: int = Field(4096, ge=0, le=1 << 24)
    """Disk quota in MiB of what one container writes (and of any one file); 0 = none (sandboxes/disk_quota.py)."""
    exec_timeout_s: float = Field(60.0, gt=0, le=86400)
    """Default timeout of one command in seconds."""
    test_timeout_s: float | None = Field(None, gt=0, le=86400)
    """Seconds for one test run when grading a SWE task (the eval script's test command); None = the
    family's own (600 s). Terminal-Bench and Harbor tasks carry their own test timeouts."""
    output_limit_bytes: int = Field(65536, ge=1024, le=64 << 20)
    """Per-stream output cap; head and tail are kept and `truncated` is set."""
    pool_size: int = Field(2, ge=0, le=256)
    """Warm containers kept per image; 0 = a fresh container per use."""
    max_concurrency: int = Field(4, ge=1, le=4096)
    """Containers alive at once; further requests wait (back-pressure)."""
