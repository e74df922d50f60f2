"""Ownership labels and the owner-alive test behind `gc` (no engine needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from sandboxes import lifecycle as lc


def test_labels_name_this_process_and_run(monkeypatch):
    monkeypatch.setenv("IQUEST_RL_RUN_ID", "run-42")
    labels = lc.owner_labels()
    assert labels[lc.RUN_ID] == "run-42"
    assert labels[lc.OWNER_PID] == str(os.getpid())
    assert labels[lc.OWNER_HOST] == socket.gethostname()
    assert labels[lc.LABEL] == "1"
    assert float(labels[lc.CREATED]) > 1.6e9
    assert lc.owner_labels("explicit")[lc.RUN_ID] == "explicit"


def test_run_id_defaults_to_a_per_process_id(monkeypatch):
    monkeypatch.delenv("IQUEST_RL_RUN_ID", raising=False)
    assert lc.current_run_id().startswith("adhoc-")
    assert lc.current_run_id() == lc.current_run_id()


def test_live_owner_is_alive():
    assert lc.owner_alive(lc.owner_labels())


def test_dead_owner_is_dead():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    labels = {**lc.owner_labels(), lc.OWNER_PID: str(p.pid), lc.OWNER_START: "1"}
    assert not lc.owner_alive(labels)


def test_reused_pid_is_not_the_owner():
    # Same pid, different start time: the pid was recycled by an unrelated process.
    labels = {**lc.owner_labels(), lc.OWNER_START: "12345"}
    assert not lc.owner_alive(labels)


def test_other_hosts_owners_are_left_alone():
    labels = {**lc.owner_labels(), lc.OWNER_HOST: "some-other-host", lc.OWNER_PID: "999999999"}
    assert lc.owner_alive(labels)


def test_garbage_pid_label_is_dead():
    assert not lc.owner_alive({lc.OWNER_HOST: socket.gethostname(), lc.OWNER_PID: "nope"})


def test_start_ticks_survive_odd_process_names(tmp_path):
    # The comm field may contain spaces and ')': parse after the last ')'.
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    p = subprocess.Popen([str(odd), "5"])
    try:
        with open(f"/proc/{p.pid}/stat") as f:
            assert ") b (c)" in f.read()
        assert lc.process_start_ticks(p.pid).isdigit()
        assert lc.owner_alive({**lc.owner_labels(), lc.OWNER_PID: str(p.pid),
                               lc.OWNER_START: lc.process_start_ticks(p.pid)})
    finally:
        p.kill()
        p.wait()
