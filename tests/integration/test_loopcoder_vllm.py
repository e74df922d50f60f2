"""Our trainable models score token sequences exactly as vLLM serves them (fp32, CPU prompt logprobs).

Two engines in all, each started once: the tiny Loop checkpoint (gates randomised so per-head,
per-token gating matters; window 8, sequences up to 97 tokens) and the tiny dense Llama. Each engine
scores given sequences (prefill) and samples a continuation (decode through its KV caches, the sliding
window one included), which we re-score in one pass as the learner would.
Observed residue ~1e-6: fp32 summation order (oneDNN GEMMs and vLLM's CPU attention kernel versus
torch matmul and SDPA). The negative controls show the 1e-3 bound would catch a semantic slip.
"""

from __future__ import annotations

import gc
import shutil

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.vllm

TOLERANCE = 1e-3
LENGTHS = (40, 97, 20)
GEN_PROMPT, GEN_TOKENS = 12, 48
"""Decode check: tokens sampled by vLLM (its KV-cache path) re-scored by us in one pass."""


def _sequences(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in LENGTHS]


def _vllm_scores(path: str, seqs: list[list[int]]) -> tuple[list[torch.Tensor], list[int], torch.Tensor]:
    """Start an engine once, shut it down after. Returns (prompt logprobs of tokens 1.. of each
    sequence, (len-1,) each; a sampled sequence: prompt + GEN_TOKENS decoded tokens; their logprobs)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=256, seed=0,
              enable_prefix_caching=False)
    try:
        outs = llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                            SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
        prompt = seqs[0][:GEN_PROMPT]
        gen = llm.generate([TokensPrompt(prompt_token_ids=prompt)],
                           SamplingParams(max_tokens=GEN_TOKENS, logprobs=0, temperature=1.0, seed=0,
                                          ignore_eos=True), use_tqdm=False)[0].outputs[0]
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    prompt_lps = [torch.tensor([pos[tok].logprob for pos, tok in zip(o.prompt_logprobs[1:], s[1:])])
                  for s, o in zip(seqs, outs)]
    gen_ids = list(gen.token_ids)
    gen_lps = torch.tensor([pos[tok].logprob for pos, tok in zip(gen.logprobs, gen_ids)])
    return prompt_lps, prompt + gen_ids, gen_lps


def _our_logprobs(model, seqs: list[list[int]]) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            out.append(logp.gather(-1, ids[0, 1:, None])[:, 0])
    return out


def _max_diffs(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> list[float]:
    assert [len(t) for t in ours] == [len(t) for t in theirs]
    diffs = [(a - b).abs().max().item() for a, b in zip(ours, theirs)]
    print("max |logprob diff| per sequence:", diffs)  # shown with pytest -rP
    return diffs


@pytest.fixture(scope="module")
def loop_checkpoint(tmp_path_factory) -> str:
    """tiny:loopcoder-tiny with random gate weights (the factory starts them at exactly 0.5)."""
    from safetensors.torch import load_file, save_file

    from iquest_rl.models import loopcoder  # noqa: F401  (AutoConfig registration, needed by vLLM too)
    from iquest_rl.models.tiny import resolve_model_path

    out = tmp_path_factory.mktemp("loop") / "ckpt"
    shutil.copytree(resolve_model_path("tiny:loopcoder-tiny"), out)
    weights = load_file(out / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for name in weights:
        if name.startswith("model.gate_projections."):
            scale = 0.5 if name.endswith(".weight") else 1.0
            weights[name] = torch.randn(weights[name].shape, generator=g) * scale
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return str(out)


@pytest.fixture(scope="module")
def loop_scores(loop_checkpoint):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(loop_checkpoint, dtype=torch.float32).eval()
    seqs = _sequences(model.config.vocab_size)
    assert max(LENGTHS) > 8 * model.config.loop_window_size
    return (model, seqs, *_vllm_scores(loop_checkpoint, seqs))


def test_loop_logprobs_match_vllm(loop_scores):
    from iquest_rl.models.loopcoder import IQuestLoopCoderForCausalLM

    model, seqs, theirs, _, _ = loop_scores
    assert isinstance(model, IQuestLoopCoderForCausalLM)
    diffs = _max_diffs(_our_logprobs(model, seqs), theirs)
    assert max(diffs) <= TOLERANCE, diffs


def test_loop_sampled_logprobs_match_vllm(loop_scores):
    model, _, _, sampled, sampled_lps = loop_scores
    assert len(sampled) == GEN_PROMPT + GEN_TOKENS
    ours = _our_logprobs(model, [sampled])[0][GEN_PROMPT - 1:]
    diffs = _max_diffs([ours], [sampled_lps])
    assert max(diffs) <= TOLERANCE, diffs


@pytest.mark.parametrize("change", ["window_plus_one", "window_minus_one", "single_loop", "gates_at_half"])
def test_loop_comparison_catches_semantic_slips(loop_scores, change):
    model, seqs, theirs, _, _ = loop_scores
    window, loops = model.config.loop_window_size, model.config.loop_num
    saved = {n: p.detach().clone() for n, p in model.model.gate_projections.named_parameters()}
    try:
        if change == "window_plus_one":
            model.config.loop_window_size = window + 1
        elif change == "window_minus_one":
            model.config.loop_window_size = window - 1
        elif change == "single_loop":
            model.config.loop_num = 1
        else:
            with torch.no_grad():
                for p in model.model.gate_projections.parameters():
                    p.zero_()
        diffs = _max_diffs(_our_logprobs(model, seqs), theirs)
    finally:
        model.config.loop_window_size, model.config.loop_num = window, loops
        with torch.no_grad():
            for n, p in model.model.gate_projections.named_parameters():
                p.copy_(saved[n])
    assert max(diffs) > TOLERANCE, diffs


def test_dense_llama_logprobs_match_vllm():
    from transformers import AutoModelForCausalLM

    from iquest_rl.models.tiny import resolve_model_path

    path = resolve_model_path("tiny:llama-tiny")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    seqs = _sequences(model.config.vocab_size)
    prompt_lps, sampled, sampled_lps = _vllm_scores(path, seqs)
    diffs = _max_diffs(_our_logprobs(model, seqs), prompt_lps)
    assert max(diffs) <= TOLERANCE, diffs
    diffs = _max_diffs([_our_logprobs(model, [sampled])[0][GEN_PROMPT - 1:]], [sampled_lps])
    assert max(diffs) <= TOLERANCE, diffs
