"""Weight names and shapes of our LoopCoder against the released 40B Loop checkpoint's config (meta device)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from iquest_rl.models import loopcoder  # noqa: E402
from iquest_rl.models.loopcoder_config import IQuestLoopCoderConfig  # noqa: E402

# config.json of IQuestLab/IQuest-Coder-V1-40B-Loop-Instruct (the fields that shape the weights).
RELEASED_40B_LOOP = {
    "architectures": ["IQuestLoopCoderForCausalLM"],
    "model_type": "iquestloopcoder",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "eos_token_id": [2, 75864, 75869],
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 27648,
    "loop_num": 2,
    "loop_window_size": 64,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "num_attention_heads": 40,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 76800,
}


@pytest.fixture(scope="module")
def meta_model():
    config = IQuestLoopCoderConfig.from_dict(dict(RELEASED_40B_LOOP))
    with torch.device("meta"):
        return loopcoder.IQuestLoopCoderForCausalLM(config)


def test_config_fields(meta_model):
    c = meta_model.config
    assert (c.loop_num, c.loop_window_size, c.head_dim) == (2, 64, 128)
    assert c.rope_parameters["rope_theta"] == 500000


def test_layer_gate_embedding_and_head_shapes(meta_model):
    shapes = {n: tuple(p.shape) for n, p in meta_model.named_parameters()}
    assert all(p.device.type == "meta" for p in meta_model.parameters())
    layer0 = {n: s for n, s in shapes.items() if n.startswith("model.layers.0.")}
    assert layer0 == {
        "model.layers.0.self_attn.q_proj.weight": (5120, 5120),
        "model.layers.0.self_attn.k_proj.weight": (1024, 5120),
        "model.layers.0.self_attn.v_proj.weight": (1024, 5120),
        "model.layers.0.self_attn.o_proj.weight": (5120, 5120),
        "model.layers.0.mlp.gate_proj.weight": (27648, 5120),
        "model.layers.0.mlp.up_proj.weight": (27648, 5120),
        "model.layers.0.mlp.down_proj.weight": (5120, 27648),
        "model.layers.0.input_layernorm.weight": (5120,),
        "model.layers.0.post_attention_layernorm.weight": (5120,),
    }
    gates = {n: s for n, s in shapes.items() if n.startswith("model.gate_projections.")}
    assert len(gates) == 2 * 80
    for i in range(80):
        assert gates[f"model.gate_projections.{i}.weight"] == (40, 128)
        assert gates[f"model.gate_projections.{i}.bias"] == (40,)
    assert shapes["model.embed_tokens.weight"] == (76800, 5120)
    assert shapes["lm_head.weight"] == (76800, 5120)
    assert shapes["model.norm.weight"] == (5120,)
    assert sum(n.startswith("model.layers.") for n in shapes) == 80 * 9
    assert len(shapes) == 80 * 9 + 160 + 3  # nothing else: every name must exist in the checkpoint


def test_parameter_count_is_about_40b(meta_model):
    total = sum(p.numel() for p in meta_model.parameters())
    per_layer = 2 * 5120 * 5120 + 2 * 1024 * 5120 + 3 * 5120 * 27648 + 2 * 5120
    expected = 80 * per_layer + 80 * (40 * 128 + 40) + 2 * 76800 * 5120 + 5120
    assert total == expected
    assert 39e9 < total < 41e9, total
