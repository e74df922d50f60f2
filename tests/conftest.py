"""Shared fixtures and the engine accounting that makes CI fail when an engine marker did not run."""

from __future__ import annotations

import os
from collections import Counter

import pytest

ENGINE_MARKERS = ("docker", "vllm", "deepspeed", "ray")
_passed: Counter = Counter()
_selected: Counter = Counter()


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    cuda = None
    for item in items:
        for m in ENGINE_MARKERS:
            if item.get_closest_marker(m):
                _selected[m] += 1
        if item.get_closest_marker("gpu"):
            cuda = _has_cuda() if cuda is None else cuda
            if not cuda:
                item.add_marker(skip_gpu)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        for m in ENGINE_MARKERS:
            if m in report.keywords:
                _passed[m] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.section("engines exercised (tests passed / selected)")
    for m in ENGINE_MARKERS:
        tr.write_line(f"{m:10s} {_passed[m]:4d} / {_selected[m]}")


def pytest_sessionfinish(session, exitstatus):
    # In CI every engine marker must have really run: a missing engine is a failure, never a skip.
    if os.environ.get("CI") != "true" or session.config.option.collectonly:
        return
    if session.config.getoption("markexpr") or session.config.getoption("keyword"):
        return
    missing = [m for m in ENGINE_MARKERS if _passed[m] == 0]
    if missing and session.exitstatus == 0:
        print(f"\nCI: no passing test exercised {', '.join(missing)}; failing the run")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The cached tiny Llama checkpoint (made on first use)."""
    from iquest_rl.models.tiny import resolve_model_path

    return resolve_model_path("tiny:llama-tiny")
