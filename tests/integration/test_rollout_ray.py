"""RolloutWorker as a named Ray actor: batched GRPO groups, agent-loop turns, weight updates and sync
probes through Ray. One actor (one vLLM engine) for the module."""

from __future__ import annotations

import pytest

from iquest_rl.actors.rollout import (NAMESPACE, GenerationRequest, RemotePolicy, actor_name,
                                      reasoning_split_metrics, rollout_actor_cls)
from iquest_rl.agent.policy import Policy
from iquest_rl.config.model import ModelConfig
from iquest_rl.config.rollout import RolloutConfig, SamplingConfig
from iquest_rl.weight_sync.buckets import WeightSyncError, write_buckets

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

PROMPTS = [[1, 40, 41, 42, 43, 2], [1, 300, 301, 302], [500, 501]]


@pytest.fixture(scope="module")
def worker(tiny_model_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    cls = rollout_actor_cls(num_cpus=1)
    rollout = RolloutConfig(max_model_len=512, max_num_seqs=16, sampling=SamplingConfig(max_tokens=10))
    actor = cls.options(name=actor_name(0), namespace=NAMESPACE).remote(ModelConfig(path="tiny:llama-tiny"), rollout)
    ray.get(actor.health.remote(), timeout=300)
    yield actor
    ray.get(actor.shutdown.remote(), timeout=60)
    ray.kill(actor)
    ray.shutdown()


def hf_logprobs(path, seqs):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([s])).logits[0, :-1], -1)
                .gather(-1, torch.tensor(s[1:])[:, None])[:, 0].tolist() for s in seqs]


def test_worker_is_a_named_actor(worker):
    import ray

    same = ray.get_actor("rollout-0", namespace="iquest-rl")
    assert same._actor_id == worker._actor_id
    health = ray.get(same.health.remote())
    assert health["alive"] and health["version"] == 0 and health["device"] == "cpu"
    with pytest.raises(ValueError):
        ray.get_actor("rollout-1", namespace="iquest-rl")


def test_generate_groups_through_ray(worker):
    import ray

    reqs = [GenerationRequest(p, n=4, seed=i, request_id=f"task-{i}") for i, p in enumerate(PROMPTS)]
    reqs.append(GenerationRequest(PROMPTS[0], n=2, seed=9, max_tokens=3, request_id="short"))
    first, again = ray.get([worker.generate.remote(reqs), worker.generate.remote(reqs)])
    assert [r.request_id for r in first] == ["task-0", "task-1", "task-2", "short"]
    assert [[s.token_ids for s in r.samples] for r in first] == [[s.token_ids for s in r.samples] for r in again]
    for r, req in zip(first, reqs):
        assert r.prompt_ids == req.prompt_ids and len(r.samples) == req.n
        for s, think, answer in zip(r.samples, r.thinking_tokens, r.answer_tokens):
            assert len(s.logprobs) == len(s.token_ids) == think + answer
            assert all(lp <= 0.0 for lp in s.logprobs) and s.policy_version == 0
    assert all(len(s.token_ids) <= 3 for s in first[-1].samples)
    metrics = reasoning_split_metrics(first)
    assert metrics["thinking_tokens_mean"] + metrics["answer_tokens_mean"] > 0


def test_remote_policy_drives_agent_turns(worker):
    import ray

    policy = RemotePolicy(worker, seed=5)
    assert isinstance(policy, Policy)
    turn1 = policy.generate(PROMPTS[0], SamplingConfig(max_tokens=6), 6)
    assert len(turn1.logprobs) == len(turn1.token_ids) <= 6
    same = ray.get(worker.generate_one.remote(PROMPTS[0], SamplingConfig(max_tokens=6), 6, 5))
    assert same.token_ids == turn1.token_ids


def test_update_weights_through_ray(worker, tiny_model_path, tmp_path):
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from iquest_rl.models.tiny import make_tiny

    other = str(make_tiny(tmp_path / "llama-tiny-s1", "llama", "tiny", seed=1))
    state = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32).state_dict()
    before = ray.get(worker.fingerprint.remote())
    update = write_buckets(state.items(), tmp_path / "w", version=1, bucket_bytes=1 << 20)
    fp = ray.get(worker.update_weights.remote(update))
    assert fp.version == 1 and fp.served == update.probe != before.served
    assert ray.get(worker.version.remote()) == 1
    got = ray.get(worker.probe_logprobs.remote(PROMPTS))
    want = hf_logprobs(other, PROMPTS)
    assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) <= 1e-4

    bad = write_buckets(state.items(), tmp_path / "w", version=2, bucket_bytes=1 << 20)
    raw = bytearray(open(bad.bucket_paths[0], "rb").read())
    raw[-8] ^= 0x01
    open(bad.bucket_paths[0], "wb").write(bytes(raw))
    with pytest.raises(WeightSyncError, match="checksum"):
        ray.get(worker.update_weights.remote(bad))
    assert ray.get(worker.version.remote()) == 1
