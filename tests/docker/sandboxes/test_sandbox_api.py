"""The docker backend's API: exec semantics, files in and out, diff(), and infrastructure errors
raised as SandboxInfraError (never returned as a failed result)."""

from __future__ import annotations

import threading
import time

import pytest

from iquest_rl.config.sandbox import SandboxConfig
from sandboxes.base import Sandbox, SandboxInfraError, SandboxSpec
from sandboxes.docker_backend import DockerSandbox

pytestmark = pytest.mark.docker

GIT = "git -c user.email=t@t -c user.name=t"


def test_exec_status_streams_env_user_workdir(shared_sb):
    assert isinstance(shared_sb, Sandbox)
    r = shared_sb.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out, r.truncated, r.ok) == (3, "out\n", "err\n", False, False, False)
    assert shared_sb.exec("echo $A-$B", env={"A": "1", "B": "two words"}).stdout == "1-two words\n"
    assert shared_sb.exec("pwd").stdout == "/home/agent\n"
    assert shared_sb.exec("pwd", workdir="/tmp").stdout == "/tmp\n"
    assert shared_sb.exec("id -u", user="0:0").stdout == "0\n"
    assert shared_sb.exec("[[ 1 == 1 ]] && source /dev/null && echo bash").stdout == "bash\n"
    assert shared_sb.exec("exit 127").exit_code == 127  # plain failures are results, not errors


def test_closing_stdout_does_not_end_the_command_early(shared_sb):
    r = shared_sb.exec("echo bye; exec >&- 2>&-; sleep 0.5; exit 3", timeout=10)
    assert (r.exit_code, r.stdout, r.timed_out) == (3, "bye\n", False) and r.duration_s >= 0.5
    r = shared_sb.exec("exec >&- 2>&-; sleep 100", timeout=1)
    assert r.timed_out and r.exit_code == -1


def test_files_round_trip_with_agent_ownership(shared_sb, tmp_path):
    blob = bytes(range(256)) * 100
    shared_sb.write_file("data/blob.bin", blob, mode=0o600)
    assert shared_sb.read_file("/home/agent/data/blob.bin") == blob
    assert shared_sb.exec("stat -c '%u:%g %a' data/blob.bin").stdout == "1000:1000 600\n"
    shared_sb.write_file("data/blob.bin", "rewritten")
    assert shared_sb.read_file("data/blob.bin") == b"rewritten"
    with pytest.raises(FileNotFoundError):
        shared_sb.read_file("no/such/file")
    with pytest.raises(IsADirectoryError):
        shared_sb.read_file("data")

    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    shared_sb.copy_in(str(src), "copied/tree")
    assert shared_sb.exec("cat copied/tree/a.txt copied/tree/sub/b.txt; stat -c %u copied/tree/sub/b.txt").stdout == "AB1000\n"
    shared_sb.exec("echo C > copied/tree/sub/c.txt; ln -s /etc/passwd copied/tree/link")
    shared_sb.copy_out("copied/tree", str(tmp_path / "back"))
    assert (tmp_path / "back" / "sub" / "c.txt").read_text() == "C\n"
    assert (tmp_path / "back" / "a.txt").read_text() == "A"
    assert not (tmp_path / "back" / "link").exists()  # absolute symlink from the sandbox: skipped
    shared_sb.copy_out("copied/tree/a.txt", str(tmp_path / "one.txt"))
    assert (tmp_path / "one.txt").read_text() == "A"


def test_diff_sees_edits_new_and_deleted_files_and_changes_nothing(make_sb, tmp_path):
    sb = make_sb(workdir="/home/agent")
    sb.exec(f"mkdir repo && cd repo && git init -q && printf 'a\\nb\\n' > f && echo keep > k && echo gone > d "
            f"&& echo ign > .gitignore && {GIT} add -A && {GIT} commit -qm base")
    sb.workdir = "/home/agent/repo"
    base = sb.exec("git rev-parse HEAD").stdout.strip()
    sb.exec("printf 'a\\nB\\n' > f && rm d && mkdir -p new/dir && echo fresh > new/dir/n.py "
            "&& echo junk > ign && printf '\\x00\\x01' > bin.dat")
    status = sb.exec("git status --porcelain; ls .git; git diff --cached --stat").stdout
    d = sb.diff()
    assert "+B" in d and "-b" in d and "deleted file mode" in d and "new/dir/n.py" in d and "+fresh" in d
    assert "bin.dat" in d and "GIT binary patch" in d
    assert "ign" not in d.replace(".gitignore", "")  # ignored files stay out
    assert sb.exec("git status --porcelain; ls .git; git diff --cached --stat").stdout == status

    # The patch reproduces the agent's tree on a fresh checkout of the base commit.
    sb.write_file("/home/agent/patch.diff", d)
    r = sb.exec(f"git clone -q /home/agent/repo /home/agent/clone && cd /home/agent/clone && git checkout -q {base} "
                "&& git apply /home/agent/patch.diff && diff -r -x .git -x ign /home/agent/repo /home/agent/clone && echo same")
    assert r.stdout.endswith("same\n"), r

    # Committing does not hide the work from a diff against the task's base commit.
    sb.exec(f"{GIT} add -A && {GIT} commit -qm agent")
    assert sb.diff() == ""
    assert "+fresh" in sb.diff(base)


def test_diff_without_a_repo_is_an_error_not_an_empty_patch(shared_sb):
    with pytest.raises(RuntimeError, match="git diff .* failed"):
        shared_sb.diff()


def test_container_killed_mid_exec_raises_infra_error(make_sb, dclient):
    sb = make_sb()
    threading.Timer(1.0, lambda: dclient.api.kill(sb.id)).start()
    t0 = time.monotonic()
    with pytest.raises(SandboxInfraError, match=sb.name):
        sb.exec("sleep 20", timeout=30)
    assert time.monotonic() - t0 < 10
    with pytest.raises(SandboxInfraError, match="not running"):
        sb.exec("echo after")


def test_removed_container_raises_infra_error_on_every_operation(make_sb, dclient):
    sb = make_sb()
    dclient.api.remove_container(sb.id, force=True)
    for op in (lambda: sb.exec("true"), lambda: sb.read_file("/etc/hostname"),
               lambda: sb.write_file("x", "y")):
        with pytest.raises(SandboxInfraError, match=sb.name):
            op()
    assert not sb.alive()


def test_missing_image_is_an_infra_error_naming_the_image(dclient, run_id):
    sb = DockerSandbox(SandboxSpec("iquest-rl/does-not-exist:never"), SandboxConfig(), client=dclient, run_id=run_id)
    with pytest.raises(SandboxInfraError, match="does-not-exist"):
        sb.start()


def test_unreachable_daemon_is_an_infra_error():
    from sandboxes.engine import docker_client

    with pytest.raises(SandboxInfraError, match="unreachable"):
        docker_client("unix:///nonexistent/docker.sock")
    # Stopping the shared daemon mid-exec is too disruptive for a shared machine: not tested.


def test_exec_failing_to_start_is_an_infra_error(shared_sb):
    with pytest.raises(SandboxInfraError, match="exec failed to start"):
        shared_sb.exec("true", workdir="/no/such/dir")


def test_limits_are_applied_as_configured(make_sb, dclient):
    sb = make_sb(memory_mb=200, cpus=0.5, pids_limit=99)
    hc = dclient.api.inspect_container(sb.id)["HostConfig"]
    assert hc["Memory"] == 200 << 20 and hc["MemorySwap"] == 200 << 20
    assert hc["NanoCpus"] == 5 * 10**8 and hc["PidsLimit"] == 99
    assert hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"] and hc["Init"] is True
    assert "no-new-privileges" in hc["SecurityOpt"] and "/tmp" in hc["Tmpfs"]
    procs = [" ".join(p) for p in dclient.api.top(sb.id)["Processes"]]
    assert any("docker-init" in p for p in procs) and any("sleep infinity" in p for p in procs), procs


def test_daemon_stopped_mid_exec_is_an_infra_error_not_a_timeout(make_sb):
    from support.daemon import daemon_stopped_when

    sb = make_sb()
    with daemon_stopped_when("sleep 1.3571", stop_s=6.0) as stop:
        with pytest.raises(SandboxInfraError, match=rf"{sb.name}.*engine stalled"):
            sb.exec("sleep 1.3571; echo done", timeout=3)
    assert "stopped_at" in stop
    assert sb.exec("echo ok").stdout == "ok\n"  # the container survived the daemon's pause
