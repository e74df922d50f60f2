import os
import subprocess

GREET = "/app/bin/greet"


def test_executable():
    assert os.access(GREET, os.X_OK)


def test_greets():
    r = subprocess.run([GREET, "Ada"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    assert r.stdout == "Hello, Ada!\n"


def test_usage():
    r = subprocess.run([GREET], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "usage: greet NAME" in r.stderr
