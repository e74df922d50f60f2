"""`iquest-rl sft`: TRL SFTTrainer on DeepSpeed ZeRO with optional LoRA, messages JSONL data per branch.

Entry points (import from the submodules; importing this package loads nothing heavy):
`iquest_rl.sft.launch.sft_main(argv) -> int` (CLI), `iquest_rl.sft.trainer.run_sft(cfg, run_dir)` (one rank),
`iquest_rl.sft.render.render_row(...)` (branch rendering + assistant mask), `iquest_rl.sft.data.prepare(...)`.
"""
