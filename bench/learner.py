"""Learner benchmark: ZeRO-3 train-step tokens/s, and weight-sync time against a memcpy of the same bytes.

One in-process rank (world size 1, DeepSpeed on this machine's accelerator). Weight sync = gather the
partitions bucket by bucket + write checksummed safetensors buckets to shared memory (what a rollout
worker then loads); its peer is torch.clone of every exported tensor, measured in the same run.
Prints ONE JSON object; `sync_vs_memcpy_ratio` is smaller-is-better (goal <= 3).

  PYTHONPATH=. DS_ACCELERATOR=cpu python bench/learner.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, few repeats (CI)")
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed prints build/progress lines on stdout; keep stdout for the one JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args.quick)
    print(json.dumps(result))


def run(quick: bool) -> dict:
    import torch

    from iquest_rl.actors.learner import LearnerWorker
    from iquest_rl.config.algo import GRPOConfig
    from iquest_rl.config.learner import LearnerConfig
    from iquest_rl.config.model import ModelConfig
    from iquest_rl.types import TrainBatch
    from iquest_rl.weight_sync.buckets import default_root, remove_update

    path, rows, seq, repeats = ("tiny:llama-tiny", 8, 128, 2) if quick else ("tiny:llama-small", 16, 512, 3)
    worker = LearnerWorker(ModelConfig(path=path), LearnerConfig(lr=1e-5, micro_batch_size=4, grad_accum=rows // 4),
                           GRPOConfig())
    info = worker.setup()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (rows, seq), generator=g)
    am = torch.ones(rows, seq, dtype=torch.long)
    lm = am.float().clone()
    lm[:, : seq // 4] = 0
    batch = TrainBatch(input_ids=ids, attention_mask=am, loss_mask=lm,
                       advantages=torch.randn(rows, 1, generator=g) * lm, rollout_logprobs=torch.zeros(rows, seq))
    batch.rollout_logprobs = worker.compute_logprobs(batch)["logprobs"] * lm
    worker.train_step(batch)  # warm-up
    step_s = []
    for _ in range(repeats):
        step_s.append(worker.train_step(batch)["time_s"])

    root = tempfile.mkdtemp(prefix="bench-learner-", dir=default_root().parent)
    sync_s, nbytes = [], 0
    for v in range(repeats + 1):
        out = worker.export_weights(v + 1, root)
        if v:  # the first export warms page cache and allocator
            sync_s.append(out["seconds"])
        nbytes = out["nbytes"]
        remove_update(out["update"])
    shutil.rmtree(root, ignore_errors=True)
    from iquest_rl.weight_sync.gather import gathered_weights

    gather_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = dict(gathered_weights(worker.engine.module, worker.cfg.sync_bucket_mb * 2**20, 0))
        gather_s.append(time.perf_counter() - t0)
    copy_s = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        clones = [t.clone() for t in state.values()]
        copy_s.append(time.perf_counter() - t0)
        del clones
    sync, memcpy = min(sync_s), min(copy_s[1:])
    tokens = rows * seq
    return {
        "model": path, "params": info["params"], "rows": rows, "seq_len": seq,
        "train_step_s": min(step_s), "train_tokens_per_s": tokens / min(step_s),
        "sync_bytes": nbytes, "sync_s": sync, "memcpy_s": memcpy,
        "sync_gb_per_s": nbytes / sync / 1e9, "sync_vs_memcpy_ratio": sync / memcpy,
        "gather_only_s": min(gather_s), "write_buckets_s": sync - min(gather_s),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "quick": quick,
    }


if __name__ == "__main__":
    main()
