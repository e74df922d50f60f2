#!/bin/bash
set -e
# Trailing commas are the only defect: drop a comma that precedes a closing bracket or brace.
python3 - <<'PY'
import re
p = "/app/config.json"
text = open(p).read()
open(p, "w").write(re.sub(r",(\s*[\]}])", r"\1", text))
PY
