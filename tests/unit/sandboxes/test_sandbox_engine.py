"""Which errors are infrastructure errors (retried) and which are not (raised at once)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from sandboxes.base import SandboxInfraError
from sandboxes.engine import is_infra_error, retry_infra


@pytest.mark.parametrize("err,infra", [
    (docker.errors.APIError("500 Server Error: daemon busy"), True),
    (requests.exceptions.ConnectionError("connection refused"), True),
    (ConnectionResetError("reset by peer"), True),
    (SandboxInfraError("container died"), True),
    (docker.errors.ImageNotFound("No such image: x"), False),
    (FileNotFoundError("no such file in sandbox"), False),
    (ValueError("bad argument"), False),
    (KeyError("bug"), False),
])
def test_classification(err, infra):
    assert is_infra_error(err) is infra


def test_retry_backs_off_then_succeeds(monkeypatch):
    sleeps = []
    monkeypatch.setattr("sandboxes.engine.time.sleep", sleeps.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise docker.errors.APIError("500 daemon hiccup")
        return "ok"
    assert retry_infra(flaky, attempts=3, base_delay_s=1.0) == "ok"
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.5 and all(0.5 <= s <= 3.0 for s in sleeps)


def test_retry_gives_up_naming_what_failed(monkeypatch):
    monkeypatch.setattr("sandboxes.engine.time.sleep", lambda s: None)

    def down():
        raise requests.exceptions.ConnectionError("daemon gone")
    with pytest.raises(SandboxInfraError, match="start of sb-1 failed after 4 attempts.*daemon gone"):
        retry_infra(down, attempts=4, what="start of sb-1")


def test_nonzero_exit_style_errors_are_not_retried():
    calls = []

    def bad():
        calls.append(1)
        raise ValueError("not an engine problem")
    with pytest.raises(ValueError):
        retry_infra(bad, attempts=5)
    assert calls == [1]
