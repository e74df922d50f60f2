"""Rollout throughput: the RolloutWorker path (Ray actor -> AsyncLLM) vs raw `vllm.LLM.generate`.

Same model, engine settings, prompts, sampling and per-request seeds, in the same run; each engine is
started, warmed up, timed and shut down in turn so they never share the cores. Prints one JSON object;
`vs_raw_vllm_ratio` = worker tokens/s / raw tokens/s (larger is better, goal >= 0.9).

    PYTHONPATH=. python bench/rollout.py [--quick] [--model tiny:llama-small]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time


def make_requests(num_prompts: int, prompt_len: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(8, vocab) for _ in range(prompt_len)] for _ in range(num_prompts)]


def raw_vllm(model_cfg, rollout_cfg, prompts, n, max_tokens) -> dict:
    """tokens/s of one batched vllm.LLM.generate call with the worker's engine args and params."""
    from vllm import LLM

    from iquest_rl.actors.vllm_engine import derive_seed, engine_kwargs, sampling_params
    from iquest_rl.models.tiny import resolve_model_path

    kw = engine_kwargs(model_cfg, rollout_cfg, "cpu", resolve_model_path(model_cfg.path))
    llm = LLM(**kw)
    params = [sampling_params(rollout_cfg.sampling, max_tokens, n, derive_seed(rollout_cfg.seed, i, p))
              for i, p in enumerate(prompts)]
    inputs = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(inputs[:2], params[:2], use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(inputs, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    ids = [[list(c.token_ids) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]
    llm.llm_engine.engine_core.shutdown()
    del llm
    return {"wall_s": wall, "ids": ids}


def worker_path(model_cfg, rollout_cfg, prompts, n, max_tokens) -> dict:
    """tokens/s of one RolloutWorker.generate call through Ray (serialisation included)."""
    import ray

    from iquest_rl.actors.rollout import NAMESPACE, GenerationRequest, actor_name, rollout_actor_cls

    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        actor = rollout_actor_cls(num_cpus=1).options(name=actor_name(0)).remote(model_cfg, rollout_cfg)
        reqs = [GenerationRequest(p, n=n, seed=i, max_tokens=max_tokens) for i, p in enumerate(prompts)]
        ray.get(actor.generate.remote(reqs[:2]))  # warm-up
        t0 = time.perf_counter()
        results = ray.get(actor.generate.remote(reqs))
        wall = time.perf_counter() - t0
        ray.get(actor.shutdown.remote())
    finally:
        ray.shutdown()
    return {"wall_s": wall, "ids": [[s.token_ids for s in r.samples] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: proves the benchmark runs")
    ap.add_argument("--model", default="tiny:llama-small")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from iquest_rl.config.model import ModelConfig
    from iquest_rl.config.rollout import RolloutConfig, SamplingConfig
    from iquest_rl.models.tiny import resolve_model_path

    num_prompts, n, prompt_len, max_tokens = (4, 2, 16, 16) if args.quick else (32, 4, 64, 128)
    model_cfg = ModelConfig(path=args.model)
    rollout_cfg = RolloutConfig(max_model_len=1024, max_num_seqs=128,
                                sampling=SamplingConfig(temperature=1.0, max_tokens=max_tokens))
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(resolve_model_path(args.model)).vocab_size
    prompts = make_requests(num_prompts, prompt_len, vocab)

    raw = raw_vllm(model_cfg, rollout_cfg, prompts, n, max_tokens)
    ours = worker_path(model_cfg, rollout_cfg, prompts, n, max_tokens)
    raw_tokens = sum(len(s) for g in raw["ids"] for s in g)
    our_tokens = sum(len(s) for g in ours["ids"] for s in g)
    raw_tps, our_tps = raw_tokens / raw["wall_s"], our_tokens / ours["wall_s"]

    import torch
    import vllm

    print(json.dumps({
        "rollout": {
            "vs_raw_vllm_ratio": round(our_tps / raw_tps, 4),
            "worker_tokens_per_s": round(our_tps, 1), "raw_vllm_tokens_per_s": round(raw_tps, 1),
            "worker_wall_s": round(ours["wall_s"], 3), "raw_vllm_wall_s": round(raw["wall_s"], 3),
            "worker_tokens": our_tokens, "raw_vllm_tokens": raw_tokens,
            "identical_samples": raw["ids"] == ours["ids"],
            "model": args.model, "prompts": num_prompts, "n": n, "prompt_len": prompt_len,
            "max_tokens": max_tokens, "quick": args.quick,
        },
        "machine": {"cpus": os.cpu_count(), "gpu": None, "python": platform.python_version(),
                    "versions": {"vllm": vllm.__version__, "torch": torch.__version__}},
    }))


if __name__ == "__main__":
    main()
