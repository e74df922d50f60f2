"""Packing (TRL padding-free, position_ids) keeps samples apart under SDPA on the CPU.

TRL's collator concatenates the samples and emits position_ids without an attention mask;
transformers then derives a block-diagonal mask from the position_id resets -- but only without a KV
cache (`use_cache=False`, which TRL's SFTTrainer.compute_loss always passes). If that ever stops
holding, packed training would silently attend across samples: this test catches it.
"""

from __future__ import annotations

import pytest


def test_packed_logits_equal_per_sample_logits(tiny_model_path):
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    seqs = [[5, 17, 300, 42, 8, 9], [77, 12, 3], [400, 401, 402, 403]]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": s} for s in seqs])
    assert "attention_mask" not in batch and batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2, 3]]
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([s])).logits[0] for s in seqs])
        # Controls: without position_ids, or with a cache, the later samples do see the earlier ones.
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky[6:], alone[6:], atol=1e-3)
    assert not torch.allclose(cached[6:], alone[6:], atol=1e-3)
    # The first token of every sample is not a target (it would be predicted from the previous sample).
    assert batch["labels"][0, [0, 6, 9]].tolist() == [-100, -100, -100]


def test_trl_sft_trainer_runs_its_forward_without_a_cache():
    # The packed mask above is only built without a KV cache; our training relies on TRL passing it.
    import inspect

    from trl import SFTTrainer

    assert 'inputs["use_cache"] = False' in inspect.getsource(SFTTrainer.compute_loss)
