"""Pool logic on the real local backend (plus a failing factory for the retry rules): the
concurrency bound, back-pressure with a clear timeout, warm hand-out, eviction, no reuse."""

from __future__ import annotations

import threading
import time

import pytest

from iquest_rl.config.sandbox import SandboxConfig
from sandboxes.base import SandboxInfraError, SandboxSpec
from sandboxes.local_backend import LocalSandbox
from sandboxes.pool import SandboxPool, SandboxPoolTimeout


def _pool(**kw) -> SandboxPool:
    return SandboxPool(SandboxConfig(backend="local", **kw))


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


SPEC = SandboxSpec(image="a")


def test_bound_and_back_pressure_timeout():
    with _pool(pool_size=0, max_concurrency=2) as pool:
        a, b = pool.acquire(SPEC), pool.acquire(SPEC)
        t0 = time.monotonic()
        with pytest.raises(SandboxPoolTimeout, match="max_concurrency=2"):
            pool.acquire(SPEC, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
        a.close()
        c = pool.acquire(SPEC, timeout=1)
        assert pool.stats()["alive"] == 2
        b.close(), c.close()
        assert pool.stats()["alive"] == 0


def test_waiter_gets_the_slot_when_released():
    with _pool(pool_size=0, max_concurrency=1) as pool:
        held = pool.acquire(SPEC)
        got = []
        t = threading.Thread(target=lambda: got.append(pool.acquire(SPEC, timeout=5)))
        t.start()
        _wait(lambda: pool.stats()["waiting"] == 1)
        held.close()
        t.join(5)
        assert got and got[0].alive()
        got[0].close()


def test_warm_sandboxes_are_handed_out_and_never_reused():
    with _pool(pool_size=1, max_concurrency=3) as pool:
        pool.prewarm(SPEC)
        _wait(lambda: pool.stats()["warm"] == 1)
        first = pool.acquire(SPEC)
        assert first.alive()
        first.exec("touch dirty")
        first.close()
        _wait(lambda: pool.stats()["warm"] == 1 and pool.stats()["starting"] == 0)
        second = pool.acquire(SPEC)
        assert second is not first and second.workdir != first.workdir
        assert second.exec("ls").stdout == ""
        second.close()
    assert pool.stats()["alive"] == 0


def test_idle_warm_of_another_spec_is_evicted_for_a_waiter():
    with _pool(pool_size=1, max_concurrency=1) as pool:
        pool.prewarm(SandboxSpec(image="other"))
        _wait(lambda: pool.stats()["warm"] == 1)
        sb = pool.acquire(SPEC, timeout=2)
        assert pool.stats() == {"alive": 1, "waiting": 0, "warm": 0, "starting": 0, "reused": 0, "not_reused": 0}
        sb.close()


def test_unhealthy_warm_sandbox_is_replaced():
    with _pool(pool_size=1, max_concurrency=2) as pool:
        pool.prewarm(SPEC)
        _wait(lambda: pool.stats()["warm"] == 1)
        dead = pool._warm[next(iter(pool._warm))][0]
        dead.closed = True  # alive() now fails
        sb = pool.acquire(SPEC)
        assert sb is not dead and sb.alive()
        sb.close()


class _Flaky:
    """Factory whose first `fail` starts raise `error`."""

    def __init__(self, fail: int, error: Exception):
        self.fail, self.error, self.calls = fail, error, 0

    def __call__(self, spec, on_close):
        self.calls += 1
        sb = LocalSandbox(spec, SandboxConfig(backend="local"), on_close=on_close)
        if self.calls <= self.fail:
            err = self.error

            def boom():
                raise err
            sb.start = boom
        return sb


def test_infra_errors_are_retried(monkeypatch):
    monkeypatch.setattr("sandboxes.engine.time.sleep", lambda s: None)
    f = _Flaky(2, SandboxInfraError("container died"))
    with SandboxPool(SandboxConfig(backend="local", pool_size=0), factory=f) as pool:
        sb = pool.acquire(SPEC)
        assert f.calls == 3
        sb.close()
        assert pool.stats()["alive"] == 0


def test_persistent_infra_error_gives_up_and_frees_the_slot(monkeypatch):
    monkeypatch.setattr("sandboxes.engine.time.sleep", lambda s: None)
    f = _Flaky(99, SandboxInfraError("daemon down"))
    with SandboxPool(SandboxConfig(backend="local", pool_size=0, max_concurrency=1), factory=f) as pool:
        with pytest.raises(SandboxInfraError, match="after 3 attempts"):
            pool.acquire(SPEC)
        assert pool.stats()["alive"] == 0


def test_other_errors_are_not_retried():
    f = _Flaky(99, ValueError("bad spec"))
    with SandboxPool(SandboxConfig(backend="local", pool_size=0), factory=f) as pool:
        with pytest.raises(ValueError, match="bad spec"):
            pool.acquire(SPEC)
        assert f.calls == 1 and pool.stats()["alive"] == 0


class _SlowRemoval(LocalSandbox):
    """A local sandbox whose removal takes `delay` seconds and that accepts a pool's remover
    (the attribute docker sandboxes have)."""

    delay = 1.0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.remover = None
        self.removed_at = None

    def close(self) -> None:
        if self.closed:
            return
        if self.remover is not None:
            self.closed = True
            self.remover.submit(self._remove)
            return
        self._remove()

    def _remove(self) -> None:
        time.sleep(self.delay)
        self.removed_at = time.monotonic()
        self.closed = False
        super().close()


def test_removal_off_the_critical_path_still_bounds_containers_alive():
    f = lambda spec, on_close: _SlowRemoval(spec, SandboxConfig(backend="local"), on_close=on_close)  # noqa: E731
    with SandboxPool(SandboxConfig(backend="local", pool_size=0, max_concurrency=1), factory=f) as pool:
        sb = pool.acquire(SPEC)
        t0 = time.monotonic()
        sb.close()
        assert time.monotonic() - t0 < _SlowRemoval.delay / 2  # the caller does not wait for the removal
        nxt = pool.acquire(SPEC, timeout=5)  # ...but the slot is free only once it is done
        assert sb.removed_at is not None and sb.removed_at <= time.monotonic()
        assert time.monotonic() - t0 >= _SlowRemoval.delay
        nxt.close()
        assert nxt.removed_at is None
    assert nxt.removed_at is not None and pool.stats()["alive"] == 0  # pool.close() waited for it
