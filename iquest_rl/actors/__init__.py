"""Ray-hosted workers: RolloutWorker (vLLM, rollout.py + vllm_engine.py + vllm_ext.py), learner and reward workers.

Import the submodules directly; this package imports nothing (no Ray, vLLM or torch at import time).
"""
