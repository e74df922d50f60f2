#!/usr/bin/env bash
# Runs the suite with every engine marker enabled; pytest's exit code 5 (nothing collected) is a failure.
set -uo pipefail
venv="${VENV:-.venv}"
"$venv/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests (exit code 5); check the test paths and -k/-m filters" >&2
  exit 1
fi
exit "$rc"
