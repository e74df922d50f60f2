"""The Docker engine connection, the mapping of engine errors to SandboxInfraError, and retries.

Only infrastructure failures are retried (daemon/API errors, a container that died); a command's
nonzero exit status is a result, never an error, and is never retried here.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Callable, TypeVar

from .base import SandboxInfraError

log = logging.getLogger(__name__)
T = TypeVar("T")

_clients: dict[str | None, object] = {}


def docker_client(docker_host: str | None = None, pool_size: int = 16):
    """A docker SDK client for `docker_host` (None = DOCKER_HOST or the local socket), cached per URL.

    Raises SandboxInfraError when the engine cannot be reached.
    """
    import docker  # the SDK pulls in requests/urllib3: import on use, not at package import

    key = docker_host or os.environ.get("DOCKER_HOST")
    client = _clients.get(key)
    if client is not None:
        return client
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, max_pool_size=pool_size,
                                         use_ssh_client=docker_host.startswith("ssh://"))
        else:
            client = docker.from_env(max_pool_size=pool_size)
        client.api.ping()
    except engine_errors() as e:
        raise SandboxInfraError(f"docker engine {key or 'unix:///var/run/docker.sock'} unreachable: {e}") from e
    _clients[key] = client
    return client


def engine_errors() -> tuple[type[BaseException], ...]:
    """Exception types raised by the engine or its transport: `except engine_errors() as e:`."""
    import docker.errors
    import requests

    # OSError covers socket errors; ValueError is what a transport closed under a read raises.
    return (docker.errors.DockerException, requests.exceptions.RequestException, OSError, ValueError)


def is_infra_error(e: BaseException) -> bool:
    """True for failures of the engine or its transport (worth a retry), False for anything else."""
    import docker.errors

    if isinstance(e, SandboxInfraError):
        return True
    if isinstance(e, docker.errors.ImageNotFound) or "No such image" in str(e):
        return False  # a missing image is a setup error; retrying will not build it
    if isinstance(e, (ValueError, FileNotFoundError, PermissionError)):
        return False  # our callers' own errors, even though the transport can raise these types
    return isinstance(e, engine_errors())


def infra_error(what: str, e: BaseException) -> SandboxInfraError:
    """Wrap an engine error; `what` names the container and the operation."""
    return SandboxInfraError(f"{what}: {type(e).__name__}: {e}")


def retry_infra(fn: Callable[[], T], attempts: int = 3, base_delay_s: float = 0.5,
                what: str = "sandbox operation") -> T:
    """Call `fn`, retrying infrastructure errors with exponential backoff and jitter.

    Non-infrastructure exceptions propagate at once. After `attempts` failures the last error is
    raised as SandboxInfraError naming `what` and the attempt count.
    """
    last: BaseException | None = None
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified just below; non-infra re-raised as is
            if not is_infra_error(e):
                raise
            last = e
            if i + 1 < attempts:
                delay = base_delay_s * (2 ** i) * (0.5 + random.random())
                log.warning("%s failed (attempt %d/%d): %s; retrying in %.2fs", what, i + 1, attempts, e, delay)
                time.sleep(delay)
    assert last is not None
    if isinstance(last, SandboxInfraError):
        raise SandboxInfraError(f"{last} (after {attempts} attempts)") from last
    raise SandboxInfraError(f"{what} failed after {attempts} attempts: {type(last).__name__}: {last}") from last
