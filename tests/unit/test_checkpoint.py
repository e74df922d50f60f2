"""checkpoint.py file logic: atomic save, COMPLETE marker, keep-last-k, latest, restore, HF export."""

from __future__ import annotations

import json
import random

import pytest

from iquest_rl import checkpoint


def test_save_latest_prune_and_restore(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    for step in (1, 2, 3):
        random.seed(step)
        checkpoint.save(tmp_path, step, {"step": step, "cursor": step * 10},
                        write_learner=lambda d: (d / "deepspeed").mkdir(), keep=2)
    done = checkpoint.complete_checkpoints(tmp_path)
    assert [p.name for p in done] == ["step_00000002", "step_00000003"]  # keep=2 dropped step 1
    assert checkpoint.latest(tmp_path) == checkpoint.step_dir(tmp_path, 3)
    assert (done[-1] / "deepspeed").is_dir() and (done[-1] / checkpoint.COMPLETE).is_file()

    random.seed(3)
    want = [random.random() for _ in range(3)]
    random.seed(12345)
    state = checkpoint.restore(checkpoint.latest(tmp_path))
    assert state == {"step": 3, "cursor": 30}
    assert [random.random() for _ in range(3)] == want  # RNG continues where the save left it


def test_crash_while_writing_leaves_previous_latest(tmp_path):
    checkpoint.save(tmp_path, 1, {"step": 1})

    def crash(d):
        (d / "deepspeed").mkdir()
        raise RuntimeError("rank 1 died")

    with pytest.raises(RuntimeError, match="rank 1 died"):
        checkpoint.save(tmp_path, 2, {"step": 2}, write_learner=crash)
    assert checkpoint.latest(tmp_path) == checkpoint.step_dir(tmp_path, 1)
    # a directory without the marker (e.g. copied by hand) is never picked either
    checkpoint.step_dir(tmp_path, 5).mkdir()
    assert checkpoint.latest(tmp_path) == checkpoint.step_dir(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="not complete"):
        checkpoint.restore(checkpoint.step_dir(tmp_path, 5))
    # the stale temporary is cleaned by the next successful save
    checkpoint.save(tmp_path, 3, {"step": 3})
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_controller_state_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path, 1, {"bad": object()})
    assert checkpoint.latest(tmp_path) is None


def test_hf_export_loads_in_transformers(tmp_path, tiny_model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    named = list(model.state_dict().items())
    # small shards force the sharded layout with an index
    out = checkpoint.export_hf(iter(named), tmp_path / "hf", tiny_model_path, shard_bytes=1 << 20)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for n, t in named:
        assert torch.equal(back.state_dict()[n], t), n
    assert AutoTokenizer.from_pretrained(out)("def f(): pass").input_ids
