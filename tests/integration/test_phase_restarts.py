"""A worker whose process dies in the middle of a phase call is restarted by Ray and called again
(real Ray actors that exit mid-call, deterministically); one that keeps dying fails the phase by name."""

import logging
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray]


def _flaky_class(ray):
    @ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
    class Flaky:
        """Exits its process on the first `deaths` calls to work(), counted in a file across restarts."""

        def __init__(self, counter: str, deaths: int):
            self.counter, self.deaths = Path(counter), deaths

        def ping(self) -> int:
            return os.getpid()

        def work(self, x: int) -> tuple[int, int]:
            seen = int(self.counter.read_text()) if self.counter.exists() else 0
            self.counter.write_text(str(seen + 1))
            if seen < self.deaths:
                os._exit(1)
            return x * 2, os.getpid()

    return Flaky


def _run(ray, workers, deadline_s=60.0):
    import time

    from iquest_rl.phases import _restartable, _wait_alive

    deadline = time.monotonic() + deadline_s
    return _restartable(workers, "w", lambda i, a: a.work.remote(i),
                        lambda i, a: _wait_alive(a.ping.remote, deadline, f"w-{i}"), deadline, "test")


def test_worker_dying_mid_call_is_restarted_and_called_again(ray_cluster, tmp_path, caplog):
    Flaky = _flaky_class(ray_cluster)
    steady = Flaky.remote(str(tmp_path / "a"), 0)
    dies_twice = Flaky.remote(str(tmp_path / "b"), 2)
    with caplog.at_level(logging.WARNING, logger="iquest_rl.phases"):
        out = _run(ray_cluster, [steady, dies_twice])
    assert out[0][0] == 0 and out[1][0] == 2
    assert caplog.text.count("w-1 died mid-step in phase test") == 2
    assert "w-0 died" not in caplog.text
    assert (tmp_path / "b").read_text() == "3"  # two fatal calls, then the one that answered


def test_worker_that_keeps_dying_fails_the_phase_by_name(ray_cluster, tmp_path):
    from iquest_rl.phases import MAX_RESUBMITS

    Flaky = _flaky_class(ray_cluster)
    doomed = Flaky.remote(str(tmp_path / "c"), 100)
    with pytest.raises(RuntimeError, match=rf"w-0 died {MAX_RESUBMITS + 1} times in phase test"):
        _run(ray_cluster, [doomed])
