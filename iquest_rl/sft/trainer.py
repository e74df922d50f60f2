"""The body of one SFT rank: TRL's SFTTrainer on DeepSpeed ZeRO, optional PEFT LoRA, our rendered data.

`run_sft(cfg, run_dir)` expects the torch.distributed env of a launched rank (RANK, WORLD_SIZE,
MASTER_ADDR, ...) and fills a single-process one when absent. Data comes pre-tokenized from
`<run_dir>/data/` (see data.py) with an `assistant_masks` column that TRL turns into labels.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from iquest_rl.config import SFTConfig
from iquest_rl.models.tiny import resolve_model_path

from .data import prepare, read_prepared
from .deepspeed_config import deepspeed_config


def run_sft(cfg: SFTConfig, run_dir: str | Path, resume: bool | None = None) -> dict:
    """Train and write <run_dir>/final; returns the final metrics (rank 0) or {} (other ranks).

    resume: True = from the last checkpoint (error if none), False = from scratch, None = auto
    (resume when <run_dir>/checkpoints has one).
    """
    import torch

    run_dir = Path(run_dir)
    _single_process_env()
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    # With use_cpu=True accelerate does not start DeepSpeed's process group, and ZeRO-3's partitioned
    # model init (zero.Init, during from_pretrained) would then assume a world size of 1.
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    tokenizer = load_tokenizer(cfg)
    data_dir = run_dir / "data"
    if not (data_dir / "report.json").exists():
        prepare(cfg, tokenizer, data_dir)
    report = json.loads((data_dir / "report.json").read_text())
    last = last_checkpoint(run_dir)
    if resume and last is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: --resume given but there is no checkpoint")
    resume_from = str(last) if last is not None and resume is not False else None
    # Step-0 validation loss starts the curve (evaluate() before train() breaks DeepSpeed's engine).
    trainer = build_trainer(cfg, run_dir, tokenizer, on_gpu, report, eval_on_start=resume_from is None)
    out = trainer.train(resume_from_checkpoint=resume_from)
    final_metrics = dict(out.metrics)
    if trainer.eval_dataset is not None:
        final_metrics.update(trainer.evaluate())
    trainer.save_model(str(run_dir / "final"))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return {}
    save_final(cfg, run_dir / "final", tokenizer)
    tokens = report["train_tokens"] * cfg.epochs if cfg.max_steps == 0 else None
    seen = trainer.state.num_input_tokens_seen or tokens
    final_metrics.update(
        tokens_seen=seen, train_tokens_per_s=(seen or 0) / max(out.metrics["train_runtime"], 1e-9),
        skipped_rows=report["skipped_rows"], final=True)
    from .metrics import JsonlMetrics, plot_loss

    sink = next(c for c in trainer.callback_handler.callbacks if isinstance(c, JsonlMetrics))
    sink.write({"step": trainer.state.global_step, **final_metrics})

    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return final_metrics


def build_trainer(cfg: SFTConfig, run_dir: Path, tokenizer, on_gpu: bool, report: dict, eval_on_start: bool = True):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    import iquest_rl.models.loopcoder  # noqa: F401  (registers the Loop model; merge_lora relies on it too)

    from .metrics import JsonlMetrics, SaveAtEnd

    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    args = TRLConfig(
        output_dir=str(run_dir / "checkpoints"),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        packing_strategy="bfd",
        # Labels come from our assistant_masks column; TRL's own masking needs {% generation %} markers.
        assistant_only_loss=False,
        completion_only_loss=False,
        deepspeed=deepspeed_config(cfg.zero_stage, bf16=dtype == "bfloat16"),
        use_cpu=not on_gpu,
        bf16=dtype == "bfloat16",
        logging_steps=1,
        eval_strategy="steps" if cfg.eval_every else "no",
        eval_on_start=eval_on_start and cfg.val_fraction > 0,
        eval_steps=cfg.eval_every or None,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    train = datasets.Dataset.from_list(_columns(read_prepared(run_dir / "data" / "train.jsonl")))
    val_rows = read_prepared(run_dir / "data" / "val.jsonl")
    val = datasets.Dataset.from_list(_columns(val_rows)) if val_rows else None
    callbacks = [] if cfg.save_every else [SaveAtEnd()]
    callbacks.append(JsonlMetrics(run_dir / "metrics.jsonl", {"skipped_rows": report["skipped_rows"]}))
    # Loaded here, not by TRL from the path: TRL's loader takes an architecture that is not a transformers
    # class (our Loop model) for remote code and fails on its config. `args` already switched ZeRO-3 on,
    # so from_pretrained still partitions while loading.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(cfg.model.path, seed=cfg.seed), dtype=getattr(torch, dtype), device_map=None,
        trust_remote_code=cfg.model.trust_remote_code)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )


def lora_config(cfg: SFTConfig):
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


def load_tokenizer(cfg: SFTConfig):
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.model.path, seed=cfg.seed)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.chat_template:
        tok.chat_template = Path(cfg.model.chat_template).read_text()
    if tok.chat_template is None:
        raise ValueError(f"model.path={cfg.model.path}: tokenizer has no chat template; set model.chat_template")
    return tok


def save_final(cfg: SFTConfig, final: Path, tokenizer) -> None:
    """Make <final> a plain HF checkpoint: merge LoRA when asked; tokenizer, template, generation config."""
    if cfg.lora is not None and cfg.merge_lora:
        merge_lora(cfg, final)
    tokenizer.save_pretrained(final)
    base = Path(resolve_model_path(cfg.model.path, seed=cfg.seed))
    gen = base / "generation_config.json"
    if gen.exists() and not (final / "generation_config.json").exists():
        shutil.copy(gen, final / "generation_config.json")


def merge_lora(cfg: SFTConfig, final: Path) -> None:
    """Base weights + the adapter in <final> -> merged full weights in <final>; adapter kept in final/adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # Training is over: stop from_pretrained from partitioning the base model (ZeRO-3 zero.Init).
    unset_hf_deepspeed_config()
    adapter = final / "adapter"
    adapter.mkdir(exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        if (final / name).exists():
            os.replace(final / name, adapter / name)
    base = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(cfg.model.path, seed=cfg.seed), dtype=torch.float32,
        trust_remote_code=cfg.model.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    if cfg.model.dtype == "bfloat16" or (cfg.model.dtype == "auto" and torch.cuda.is_available()):
        merged = merged.to(torch.bfloat16)
    merged.save_pretrained(final, safe_serialization=True)


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


def _columns(rows: list[dict]) -> list[dict]:
    return [{"input_ids": r["input_ids"], "assistant_masks": r["assistant_masks"]} for r in rows]


def _single_process_env() -> None:
    """A one-rank torch.distributed env when not launched by the CLI (DeepSpeed needs one)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
