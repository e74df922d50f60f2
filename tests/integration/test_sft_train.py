"""`iquest-rl sft` end to end on the tiny model and the shipped toy data: ZeRO-3, LoRA, resume, vLLM.

Runs the real CLI entry (`python -m iquest_rl.sft.launch`), so ranks are real processes with
DeepSpeed over gloo. Sizes are minimal: a few dozen optimizer steps per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sft(tmp: Path, name: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "iquest_rl.sft.launch", "--quiet", f"output_dir={tmp}", f"name={name}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def val_losses(run: Path) -> list[float]:
    return [r["eval_loss"] for r in metrics(run) if "eval_loss" in r]


def ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("sft_runs")


@pytest.fixture(scope="module")
def zero3_full(runs):
    """Full fine-tune, 2 ranks, ZeRO-3 (experiments/local/sft_instruct.yaml, shortened)."""
    p = sft(runs, "full", "--config", str(ROOT / "experiments/local/sft_instruct.yaml"),
            "max_steps=16", "lr=3e-3", "micro_batch_size=8")
    ok(p)
    return runs / "full"


@pytest.fixture(scope="module")
def lora_packed(runs):
    """LoRA (all-linear, merged at the end) with packing, thinking branch, 1 rank ZeRO-3."""
    p = sft(runs, "lora", "--branch", "thinking", "lora.rank=8", "lora.alpha=16", "packing=true",
            "max_seq_len=512", "max_steps=16", "lr=1e-2", "micro_batch_size=2", "num_ranks=1")
    ok(p)
    return runs / "lora"


@pytest.mark.deepspeed
def test_two_rank_zero3_full_finetune_reduces_validation_loss(zero3_full, tiny_model_path):
    import torch
    from safetensors.torch import load_file

    losses = val_losses(zero3_full)
    assert losses[0] - losses[-1] > 0.5, losses  # step-0 eval vs final eval
    assert (zero3_full / "logs" / "rank1.log").exists()
    final = zero3_full / "final"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (final / f).exists(), f
    # ZeRO-3 partitions parameters; the saved checkpoint must hold full, trained tensors.
    base, tuned = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(final / "model.safetensors")
    assert base.keys() == tuned.keys()
    assert all(base[k].shape == tuned[k].shape for k in base)
    assert not torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])
    assert (zero3_full / "loss.png").stat().st_size > 1000
    cfg = (zero3_full / "config.yaml").read_text()
    assert "branch: instruct" in cfg and "max_steps: 16" in cfg and "num_ranks: 2" in cfg


@pytest.mark.deepspeed
def test_lora_with_packing_reduces_validation_loss_and_merges(lora_packed, tiny_model_path):
    from safetensors.torch import load_file

    losses = val_losses(lora_packed)
    assert losses[0] - losses[-1] > 0.3, losses
    final = lora_packed / "final"
    tuned = load_file(final / "model.safetensors")
    assert not any("lora" in k for k in tuned)  # merged into plain weights
    assert (final / "adapter" / "adapter_config.json").exists()
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    assert base.keys() == tuned.keys()
    assert "branch: thinking" in (lora_packed / "config.yaml").read_text()
    last = metrics(lora_packed)[-1]
    assert last["final"] and last["skipped_rows"] == 0 and last["train_tokens_per_s"] > 0


@pytest.mark.deepspeed
def test_resume_continues_from_the_last_checkpoint(runs, lora_packed):
    before = metrics(lora_packed)
    assert (lora_packed / "checkpoints" / "checkpoint-16").is_dir()
    p = sft(runs, "lora", "--resume", "--branch", "thinking", "lora.rank=8", "lora.alpha=16", "packing=true",
            "max_seq_len=512", "max_steps=20", "lr=1e-2", "micro_batch_size=2", "num_ranks=1")
    ok(p)
    new = metrics(lora_packed)[len(before):]
    steps = [r["step"] for r in new if "loss" in r]
    assert steps == [17, 18, 19, 20], steps  # no step repeated from scratch
    state = json.loads((lora_packed / "checkpoints" / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20


@pytest.mark.vllm
def test_checkpoint_loads_in_vllm_and_generates(lora_packed):
    code = f"""
import json
from vllm import LLM, SamplingParams
llm = LLM(model={str(lora_packed / 'final')!r}, dtype="float32", enforce_eager=True, max_model_len=512)
tok = llm.get_tokenizer()
prompt = tok.apply_chat_template([{{"role": "user", "content": "What is 3 + 4?"}}], tokenize=False,
                                 add_generation_prompt=True)
out = llm.generate([prompt], SamplingParams(max_tokens=24, temperature=0.0))[0].outputs[0]
print("RESULT", json.dumps({{"n": len(out.token_ids), "text": out.text}}))
"""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert res["n"] > 0


@pytest.mark.gpu
@pytest.mark.deepspeed
def test_bf16_lora_sft_on_gpu(runs, tiny_model_path):
    """The same LoRA run on CUDA: ZeRO-3 over NCCL in bf16; the merged checkpoint is bf16 and loads on the GPU."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    p = sft(runs, "gpu", "--branch", "thinking", "lora.rank=8", "lora.alpha=16", "packing=true",
            "max_seq_len=512", "max_steps=16", "lr=1e-2", "micro_batch_size=2", "num_ranks=1")
    ok(p)
    run = runs / "gpu"
    losses = val_losses(run)
    print(f"GPU-FIGURE sft_val_loss first={losses[0]:.3g} last={losses[-1]:.3g} "
          f"tokens_per_s={metrics(run)[-1]['train_tokens_per_s']:.0f}")
    assert losses[0] - losses[-1] > 0.3, losses
    tuned = load_file(run / "final" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in tuned.values())  # CPU runs train and save float32
    assert load_file(Path(tiny_model_path) / "model.safetensors").keys() == tuned.keys()
    from transformers.integrations import deepspeed as hf_ds

    hf_ds.unset_hf_deepspeed_config()  # in-process learners of other GPU tests may have left ZeRO-3 on
    model = AutoModelForCausalLM.from_pretrained(run / "final", dtype=torch.bfloat16).cuda()
    out = model.generate(torch.tensor([[1, 40, 41, 42]], device="cuda"), max_new_tokens=8, do_sample=False)
    assert out.shape[1] > 4
