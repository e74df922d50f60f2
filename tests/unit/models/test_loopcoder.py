"""LoopCoder (trainable IQuest Loop model): semantics, padding, gradients, checkpointing, training, I/O.

Logprob parity with vLLM's serving implementation lives in tests/integration/test_loopcoder_vllm.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from iquest_rl.models import loopcoder  # noqa: E402  (registers the Auto classes)
from iquest_rl.models.loopcoder_config import IQuestLoopCoderConfig  # noqa: E402

COMMON = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, bos_token_id=None, eos_token_id=1, pad_token_id=0, initializer_range=0.02,
)
WINDOW = loopcoder.TINY_LOOP_WINDOW


def _model(seed: int = 0, random_gates: bool = True):
    model = loopcoder.build_tiny(dict(COMMON), seed)
    if random_gates:
        # Zero-init gates are all 0.5; random ones make per-head, per-token gating visible.
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for gate in model.model.gate_projections:
                gate.weight.copy_(torch.randn(gate.weight.shape, generator=g))
                gate.bias.copy_(torch.randn(gate.bias.shape, generator=g))
    return model.eval()


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, COMMON["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


def test_tiny_gates_start_at_one_half():
    model = loopcoder.build_tiny(dict(COMMON), 0)
    assert model.config.loop_num == 2 and model.config.loop_window_size == WINDOW
    q = torch.randn(1, COMMON["num_attention_heads"], 5, 32)
    for gate in model.model.gate_projections:
        assert torch.equal(gate(q), torch.full((1, 2, 5, 1), 0.5))


def test_one_loop_is_exactly_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = _model()
    model.config.loop_num = 1
    llama = LlamaForCausalLM(LlamaConfig(**COMMON)).eval()
    state = {k: v for k, v in model.state_dict().items() if "gate_projections" not in k}
    llama.load_state_dict(state, strict=True)
    ids = _ids(2, 30)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, llama(ids).logits)


def test_second_loop_changes_the_output():
    model = _model()
    ids = _ids(1, 20)
    with torch.no_grad():
        two = model(ids).logits
        model.config.loop_num = 1
        one = model(ids).logits
    assert (two - one).abs().max() > 1e-2


def test_window_only_affects_positions_past_it():
    # Query i sees keys i-W+1..i of its own loop: a wider window changes nothing before position W.
    model = _model()
    ids = _ids(1, 3 * WINDOW)
    with torch.no_grad():
        narrow = model(ids).logits[0]
        model.config.loop_window_size = WINDOW + 1
        wide = model(ids).logits[0]
    assert torch.equal(narrow[:WINDOW], wide[:WINDOW])
    assert (narrow[WINDOW:] - wide[WINDOW:]).abs().amax(-1).min() > 0


def test_gates_mix_per_head_and_token():
    model = _model()
    q = torch.randn(1, 2, 4, 32)
    g = model.model.gate_projections[0](q)
    w, b = model.model.gate_projections[0].weight, model.model.gate_projections[0].bias
    expected = torch.sigmoid((q * w[None, :, None, :]).sum(-1) + b[None, :, None]).unsqueeze(-1)
    torch.testing.assert_close(g, expected)
    assert g.unique().numel() == 8


def test_masks():
    causal, windowed = loopcoder.attention_masks(None, 5, 2, torch.device("cpu"))
    assert causal is None
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]])
    assert torch.equal(windowed[0, 0].long(), expected)
    causal, windowed = loopcoder.attention_masks(torch.tensor([[0, 1, 1, 1, 1]]), 5, 2, torch.device("cpu"))
    assert not causal[0, 0, 1:, 0].any() and causal[0, 0, 0, 0]  # pad key hidden; pad query sees itself
    assert torch.equal(causal[0, 0, 1:, 1:].long(), torch.tril(torch.ones(4, 4, dtype=torch.long)))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_matches_unpadded(side):
    model = _model()
    ids = _ids(2, 24)
    short = ids[1, :17]
    pad = torch.zeros(7, dtype=torch.long)
    row = torch.cat([pad, short]) if side == "left" else torch.cat([short, pad])
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1] = (row != 0).long() if side == "right" else torch.cat([torch.zeros(7), torch.ones(17)]).long()
    batch = torch.stack([ids[0], row])
    with torch.no_grad():
        padded = model(batch, attention_mask=mask).logits
        alone = model(short[None]).logits[0]
        full = model(ids[:1]).logits[0]
    real = padded[1, 7:] if side == "left" else padded[1, :17]
    torch.testing.assert_close(real, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded[0], full, atol=1e-5, rtol=0)
    assert torch.isfinite(padded).all()


def test_gradients_flow_to_every_gate():
    model = _model().train()
    ids = _ids(2, 20)
    model(ids, labels=ids).loss.backward()
    for i, gate in enumerate(model.model.gate_projections):
        assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0, f"gate {i} weight"
        assert gate.bias.grad is not None and (gate.bias.grad != 0).all(), f"gate {i} bias"
    assert all(p.grad is not None for p in model.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = _ids(2, 20)
    grads = []
    for checkpointing in (False, True):
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert model.supports_gradient_checkpointing
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_sft_steps_lower_the_loss():
    torch.manual_seed(0)
    model = _model().train()
    ids = _ids(4, 32, seed=3)
    labels = ids.clone()
    labels[:, :8] = -100  # prompt part, as in SFT
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gate_before = model.model.gate_projections[0].bias.detach().clone()
    losses = []
    for _ in range(10):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert not torch.equal(model.model.gate_projections[0].bias, gate_before)


def test_init_tiny_checkpoint_loads_through_auto_classes(tmp_path):
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    from iquest_rl.cli import main

    out = tmp_path / "loop"
    main(["model", "init-tiny", str(out), "--arch", "loopcoder"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["IQuestLoopCoderForCausalLM"] and cfg["model_type"] == "iquestloopcoder"
    assert cfg["loop_num"] == 2 and cfg["loop_window_size"] == WINDOW
    assert isinstance(AutoConfig.from_pretrained(out), IQuestLoopCoderConfig)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert isinstance(model, loopcoder.IQuestLoopCoderForCausalLM)
    assert all((g.weight == 0).all() and (g.bias == 0).all() for g in model.model.gate_projections)
    ids = _ids(1, 20) % cfg["vocab_size"]
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_config_rejects_what_vllm_would_serve_differently():
    with pytest.raises(Exception, match="head_dim"):
        IQuestLoopCoderConfig(hidden_size=64, num_attention_heads=2, head_dim=16)
    with pytest.raises(Exception, match="bias"):
        IQuestLoopCoderConfig(hidden_size=64, num_attention_heads=2, attention_bias=True)


def test_no_kv_cache():
    model = _model()
    ids = _ids(1, 4)
    with torch.no_grad():
        assert torch.equal(model(ids, use_cache=True).logits, model(ids).logits)
        with pytest.raises(ValueError, match="no KV cache"):
            model(ids, past_key_values=object())
