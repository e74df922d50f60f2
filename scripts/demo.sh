#!/usr/bin/env bash
# The CPU demo: runs the part of the pipeline that exists today on the tiny model.
set -euo pipefail
venv="${VENV:-.venv}"
exec "$venv/bin/python" -m iquest_rl.demo "$@"
