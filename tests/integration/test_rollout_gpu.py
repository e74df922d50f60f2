"""GPU-only RolloutWorker paths: sleep/wake for colocated layouts and the NCCL weight-transfer hook.
Skipped without CUDA (the only marker that may skip); they cannot run on the CPU machines."""

from __future__ import annotations

import pytest

from iquest_rl.config.model import ModelConfig
from iquest_rl.config.rollout import RolloutConfig, SamplingConfig

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]


@pytest.fixture(scope="module")
def gpu_engine(tiny_model_path):
    from iquest_rl.actors.vllm_engine import VLLMEngine

    e = VLLMEngine(ModelConfig(path="tiny:llama-tiny", dtype="float32"),
                   RolloutConfig(max_model_len=512, gpu_memory_utilization=0.3, sleep_between_steps=True),
                   device="cuda")
    yield e
    e.close()


def test_sleep_releases_memory_and_wake_restores_outputs(gpu_engine):
    import torch

    sampling = SamplingConfig(temperature=0.0, max_tokens=8)
    before = gpu_engine.generate([1, 40, 41, 42], sampling, 8)
    free_awake = torch.cuda.mem_get_info()[0]
    gpu_engine.sleep(level=1)
    assert torch.cuda.mem_get_info()[0] > free_awake  # weights offloaded and KV cache released
    gpu_engine.wake_up()
    assert gpu_engine.generate([1, 40, 41, 42], sampling, 8).token_ids == before.token_ids


def test_nccl_transfer_backend_is_configured(gpu_engine):
    from iquest_rl.weight_sync import nccl

    assert gpu_engine._engine.vllm_config.weight_transfer_config.backend == "nccl"
    info = nccl.update_info(["model.norm.weight"], ["float32"], [[128]])
    assert info["names"] == ["model.norm.weight"]
    with pytest.raises(ValueError):
        nccl.update_info(["a", "b"], ["float32"], [[1]])
