"""Learner rank 0 holds the group's rendezvous port from the moment it names it: a port found free
and bound only at setup could be taken in between (by vLLM, Ray, any process) and fail the group."""

from __future__ import annotations

import errno
import socket
from datetime import timedelta

import pytest


def test_rank0_holds_the_port_it_names_and_ranks_join_through_it():
    import torch.distributed as dist

    from iquest_rl.actors.learner import LearnerWorker
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig

    w = LearnerWorker(ModelConfig(path="tiny:llama-tiny"), LearnerConfig(), GRPOConfig(), rank=0, world_size=2)
    addr, port = w.master_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError) as e:
        s.bind((addr, port))
    assert e.value.errno == errno.EADDRINUSE
    other = dist.TCPStore(addr, port, 2, is_master=False, timeout=timedelta(seconds=30))
    other.set("rank1", "here")
    assert w.store.get("rank1") == b"here"
