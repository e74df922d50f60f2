#!/usr/bin/env bash
# The CPU demo: GRPO on the toy digits task through the whole pipeline (vLLM rollouts, reward workers,
# 2-rank ZeRO-3 learner, verified weight sync), then the run's summary and reward curve.
set -euo pipefail
venv="${VENV:-.venv}"
name="demo-$(date +%Y%m%d-%H%M%S)"
recipe="${DEMO_RECIPE:-experiments/local/digits_grpo.yaml}"
"$venv/bin/iquest-rl" run "$recipe" "name=$name" "$@"
"$venv/bin/iquest-rl" inspect "runs/$name"
echo "reward curve: runs/$name/plots/reward.png   metrics: runs/$name/metrics.jsonl"
