"""`iquest-rl sft` on malformed data: exit code 2 and every bad row named as FILE:LINE: what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_malformed_file_fails_before_any_rank_starts_naming_file_and_line(tmp_path):
    f = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    f.write_text("\n".join([
        json.dumps(good),
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
        json.dumps({"messages": [{"role": "user", "content": ["not", "text"]}, {"role": "assistant", "content": "a"}]}),
        '{"messages": [',
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),
    ]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "iquest_rl.sft.launch", f"output_dir={tmp_path}", "name=bad",
                        f"data=[{{path: '{f}'}}]"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "4 malformed row(s) (set bad_rows=skip to skip them)" in p.stderr
    assert f"{f}:2: messages[1]: empty assistant turn (no content and no tool_calls)" in p.stderr
    assert f"{f}:3: messages[0]: 'content' must be a string, got list" in p.stderr
    assert f"{f}:4: invalid JSON" in p.stderr
    assert f"{f}:5: no assistant message" in p.stderr
    assert not (tmp_path / "bad" / "logs").exists()  # no rank was started


def test_unknown_config_key_is_a_config_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "iquest_rl.sft.launch", f"output_dir={tmp_path}", "lora.rnak=4"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "rnak" in p.stderr and "rank" in p.stderr
