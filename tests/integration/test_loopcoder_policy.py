"""The Loop model (`tiny:loopcoder-tiny`) as the policy of `iquest-rl run` and `iquest-rl sft`.

RL side: a 2-rank ZeRO-3 LearnerWorker group (fp32, gradient checkpointing) on a local Ray cluster
scores, trains on and exports the Loop model; one RolloutWorker (vLLM, in the pytest process) samples
GRPO groups from the same checkpoint and, after the bucketed weight sync, serves the learner's new
weights. SFT side: the real `iquest-rl sft` entry trains the Loop model on 2 ZeRO-3 ranks with
gradient checkpointing and writes a checkpoint that transformers loads as our Loop class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deepspeed]

ROOT = Path(__file__).resolve().parents[2]
LOOP = "tiny:loopcoder-tiny"
TOLERANCE = 1e-3
"""Learner vs vLLM logprobs (fp32): observed residue ~1e-6 (summation order)."""
PROMPTS = ("Write a function that adds two numbers.", "What is 3 + 4?", "Reverse a string in Python.",
           "Explain what a list comprehension is.")
GROUP = 2
TRAIN_STEPS = 3


# ---- iquest-rl sft ---------------------------------------------------------------------------------


def test_sft_trains_the_loop_model_under_zero3_with_gradient_checkpointing(tmp_path):
    """Runs first (module order), before the Ray/vLLM fixture below holds its cores."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from iquest_rl.models.loopcoder import IQuestLoopCoderForCausalLM
    from iquest_rl.models.tiny import resolve_model_path
    from iquest_rl.sft.launch import sft_main
    from iquest_rl.sft.metrics import read_metrics

    rc = sft_main(["--quiet", "--config", str(ROOT / "experiments/local/sft_instruct.yaml"), f"model.path={LOOP}",
                   "num_ranks=2", "max_steps=12", "lr=3e-3", "gradient_checkpointing=true",
                   f"output_dir={tmp_path}", "name=loop"])
    run = tmp_path / "loop"
    log = (run / "logs" / "rank0.log").read_text()[-3000:] if (run / "logs" / "rank0.log").exists() else ""
    assert rc == 0, log
    assert "gradient_checkpointing: true" in (run / "config.yaml").read_text()

    rows = read_metrics(run / "metrics.jsonl")  # every logged row, in order
    train = [r["loss"] for r in rows if "loss" in r]
    val = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(train) == 12 and len(val) >= 2, rows
    assert val[0] - val[-1] > 0.3, val  # step-0 eval vs final eval
    assert sum(train[-3:]) / 3 < sum(train[:3]) / 3 - 0.3, train

    final = run / "final"
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["model_type"] == "iquestloopcoder" and cfg["architectures"] == ["IQuestLoopCoderForCausalLM"]
    base_dir = Path(resolve_model_path(LOOP))
    base_cfg = AutoConfig.from_pretrained(base_dir)
    assert (cfg["loop_num"], cfg["loop_window_size"]) == (base_cfg.loop_num, base_cfg.loop_window_size)
    # ZeRO-3 partitions parameters: the saved tensors must be full and trained, gates included.
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert base.keys() == tuned.keys() and all(base[k].shape == tuned[k].shape for k in base)
    assert not torch.equal(base["model.gate_projections.0.weight"], tuned["model.gate_projections.0.weight"])

    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    assert isinstance(model, IQuestLoopCoderForCausalLM)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 31, 8, 64, 12, 77]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    assert torch.equal(model.model.gate_projections[0].weight, tuned["model.gate_projections.0.weight"])


# ---- iquest-rl run: learner group + rollout worker ------------------------------------------------


@pytest.fixture(scope="module")
def stack():
    """(ray, 2 learner ranks, RolloutWorker) on the Loop checkpoint."""
    import ray

    from iquest_rl.actors.learner import start_learner_group
    from iquest_rl.actors.rollout import RolloutWorker
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig
    from iquest_rl.config.rollout import RolloutConfig, SamplingConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = ModelConfig(path=LOOP, dtype="float32")
    learner = LearnerConfig(num_ranks=2, zero_stage=3, dtype="float32", gradient_checkpointing=True, lr=1e-3)
    learners = start_learner_group(model, learner, GRPOConfig(group_size=GROUP), group="loop", num_cpus=0.5)
    rollout = RolloutWorker(model, RolloutConfig(max_model_len=256, max_num_seqs=8,
                                                 sampling=SamplingConfig(temperature=1.0, max_tokens=16)))
    try:
        yield ray, learners, rollout
    finally:
        rollout.shutdown()
        for a in learners:
            ray.kill(a)
        ray.shutdown()


def _all(ray, learners, method: str, *args):
    """A collective call: every rank together; rank 0's result."""
    return ray.get([getattr(a, method).remote(*args) for a in learners])[0]


def _trajectories(rollout) -> list:
    """GROUP sampled completions per chat prompt, token-exact, as the agent loop records them."""
    from iquest_rl.actors.rollout import GenerationRequest
    from iquest_rl.types import Trajectory, Turn

    tok = rollout.tokenizer
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True))["input_ids"] for p in PROMPTS]
    results = rollout.generate([GenerationRequest(p, n=GROUP, request_id=f"t{i}") for i, p in enumerate(prompts)],
                               reasoning=False)
    return [Trajectory(r.request_id, "loop-test", [Turn(list(r.prompt_ids), sampled=False),
                                                   Turn(s.token_ids, sampled=True, logprobs=s.logprobs,
                                                        policy_version=s.policy_version)],
                       finish_reason=s.finish_reason, group_id=g)
            for g, r in enumerate(results) for s in r.samples]


def _gradient_checkpointing_on(worker) -> bool:
    """Runs inside a learner actor: every shared decoder layer of the DeepSpeed module checkpoints."""
    return all(layer.gradient_checkpointing for layer in worker.engine.module.model.layers)


@pytest.mark.ray
@pytest.mark.vllm
def test_loop_policy_trains_on_zero3_and_the_engine_serves_the_update(stack, tmp_path):
    import torch
    from safetensors.torch import load_file

    from iquest_rl.algos.batch import build_batch
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.models.tiny import resolve_model_path
    from iquest_rl.weight_sync.buckets import read_buckets
    from iquest_rl.weight_sync.gather import check_fingerprints
    from support.policy import served_logprobs

    ray, learners, rollout = stack
    info = ray.get([a.ping.remote() for a in learners])
    assert [i["world_size"] for i in info] == [2, 2]
    assert all(0 < i["local_numel"] < i["params"] for i in info)  # ZeRO-3: each rank holds a partition
    assert all(ray.get([a.__ray_call__.remote(_gradient_checkpointing_on) for a in learners]))

    trajs = _trajectories(rollout)
    assert len(trajs) == len(PROMPTS) * GROUP and all(t.num_sampled > 0 for t in trajs)
    # The first sample of each group wins: every group has reward variance, so advantages are non-zero.
    rewards = [1.0 if i % GROUP == 0 else 0.0 for i in range(len(trajs))]
    # overlong="none": the random tiny model rarely stops within max_tokens, and masking truncated
    # samples (the default) would leave nothing to train on.
    batch = build_batch(trajs, rewards, GRPOConfig(group_size=GROUP, overlong="none"),
                        pad_id=rollout.tokenizer.pad_token_id)
    mask = batch.loss_mask > 0
    assert batch.advantages[mask].abs().min() > 0.1

    before = _all(ray, learners, "compute_logprobs", batch)["logprobs"]
    diff = float((before - batch.rollout_logprobs)[mask].abs().max())
    assert diff <= TOLERANCE, f"learner vs vLLM sampling logprobs differ by {diff:.2e}"
    served_before = served_logprobs(rollout, batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.bool()
    assert float((before - served_before)[real].abs().max()) <= TOLERANCE

    metrics = [_all(ray, learners, "train_step", batch) for _ in range(TRAIN_STEPS)]
    assert metrics[0]["mismatch/abs_diff_max"] <= TOLERANCE
    assert all(m["grad_norm"] > 0 and m["optim_steps"] == 1 for m in metrics), metrics
    # The importance weights (learner vs rollout) grow on rewarded tokens and shrink on the others.
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.05, metrics

    out = _all(ray, learners, "export_weights", 1, str(tmp_path))
    update = out["update"]
    names = [n for b in update.names for n in b]
    checkpoint = load_file(Path(resolve_model_path(LOOP)) / "model.safetensors")
    assert sorted(names) == sorted(checkpoint), "exported names differ from the checkpoint's"
    exported = dict(read_buckets(update))
    assert all(exported[n].shape == checkpoint[n].shape for n in names)
    # The gates start at exactly 0; after training they carry gradient through loop 2 under ZeRO-3.
    assert all(exported[n].abs().max() > 0 for n in names if n.startswith("model.gate_projections."))

    fp = rollout.update_weights(update)
    check_fingerprints(update, [fp])
    served = served_logprobs(rollout, batch.input_ids, batch.attention_mask)
    after = _all(ray, learners, "compute_logprobs", batch)["logprobs"]
    assert float((served - served_before)[real].abs().max()) > 1e-2, "the update did not change the served model"
    diff = float((served - after)[real].abs().max())
    assert diff <= TOLERANCE, f"served vs learner logprobs after the sync differ by {diff:.2e}"

    # GRPO moved probability towards the rewarded samples and away from the others.
    gain = ((after - before) * batch.loss_mask).sum(1)
    pos = batch.advantages.sum(1) > 0
    print(f"sync diff {diff:.2e}; loss per step {[m['loss'] for m in metrics]}; logprob gain per row {gain.tolist()}")
    assert float(gain[pos].mean()) > 0 > float(gain[~pos].mean()), gain
