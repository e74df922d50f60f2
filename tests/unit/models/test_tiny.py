import hashlib
from pathlib import Path

import pytest

from iquest_rl.models.tiny import MARKUP_TOKENS, make_tiny, resolve_model_path


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {k: make_tiny(root / k, arch="llama", size="tiny", seed=s) for k, s in [("a", 0), ("b", 0), ("c", 1)]}


def test_deterministic_for_a_seed(built):
    a, b, c = _digest(built["a"]), _digest(built["b"]), _digest(built["c"])
    assert a == b
    assert a["tokenizer.json"] == c["tokenizer.json"]
    assert a["model.safetensors"] != c["model.safetensors"]


def test_transformers_loads_it_with_the_promised_shape(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["a"])
    model = AutoModelForCausalLM.from_pretrained(built["a"])
    n = sum(p.numel() for p in model.parameters())
    assert 0.7e6 < n < 1.5e6, n
    assert model.config.architectures == ["LlamaForCausalLM"]
    assert model.config.head_dim >= 32  # vLLM's CPU attention rejects head_dim 16
    assert not model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tok)
    for t in MARKUP_TOKENS + ["<|im_start|>", "<|im_end|>"]:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert tok.eos_token == "<|im_end|>"


def test_chat_template_renders_all_roles_with_thinking_and_tools(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["a"])
    tools = [{"type": "function", "function": {"name": "bash", "description": "run a command",
                                               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
    msgs = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": "Fix the bug."},
        {"role": "assistant", "reasoning_content": "Look at the file.", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": {"command": "cat a.py"}}}]},
        {"role": "tool", "content": "x = 1"},
        {"role": "assistant", "content": "<think>\nDone.\n</think>\n\nFixed."},
    ]
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a coder.\n\n# Tools\n")
    assert '"name": "bash"' in text and "</tools>" in text
    assert "<|im_start|>user\nFix the bug.<|im_end|>\n" in text
    assert ('<|im_start|>assistant\n<think>\nLook at the file.\n</think>\n\n<tool_call>\n'
            '{"name": "bash", "arguments": {"command": "cat a.py"}}\n</tool_call><|im_end|>\n') in text
    assert "<|im_start|>user\n<tool_response>\nx = 1\n</tool_response><|im_end|>\n" in text
    assert "<|im_start|>assistant\n<think>\nDone.\n</think>\n\nFixed.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    no_think = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # Decoding keeps the markup tokens the parsers need.
    ids = tok.encode("<think>a</think><tool_call>{}</tool_call>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<think>a</think><tool_call>{}</tool_call>"


def test_resolve_caches_and_rejects_bad_names(tmp_path, monkeypatch):
    monkeypatch.setenv("IQUEST_RL_CACHE", str(tmp_path))
    p1 = resolve_model_path("tiny:llama-tiny")
    mtime = (Path(p1) / "model.safetensors").stat().st_mtime
    assert resolve_model_path("tiny:llama-tiny") == p1
    assert (Path(p1) / "model.safetensors").stat().st_mtime == mtime
    assert resolve_model_path("/some/dir") == "/some/dir"
    with pytest.raises(ValueError, match="tiny:<arch>-<size>"):
        resolve_model_path("tiny:gpt-huge")
