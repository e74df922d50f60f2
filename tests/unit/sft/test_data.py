"""SFT data preparation: bad-rows policy with FILE:LINE, validation split, source weights."""

from __future__ import annotations

import json

import pytest

from iquest_rl.config import SFTConfig, load
from iquest_rl.data.messages import MessagesDataError
from iquest_rl.sft.data import prepare, read_prepared, split, weighted


@pytest.fixture(scope="module")
def tok(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def good(i):
    return {"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                         {"role": "assistant", "content": f"{i} + 1 = {i + 1}"}]}


@pytest.fixture
def messy(tmp_path):
    rows = [json.dumps(good(i)) for i in range(10)]
    rows[2] = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}'
    rows[5] = '{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}'
    rows[7] = json.dumps({"messages": [{"role": "user", "content": "long " * 400},
                                       {"role": "assistant", "content": "ok"}]})
    f = tmp_path / "messy.jsonl"
    f.write_text("\n".join(rows) + "\n")
    return f


def cfg_for(path, *extra):
    return load(None, [f"data=[{{path: '{path}'}}]", "max_seq_len=128", *extra], cls=SFTConfig)


def test_fail_policy_lists_every_bad_row_with_file_line_and_reason(tok, messy, tmp_path):
    with pytest.raises(MessagesDataError) as e:
        prepare(cfg_for(messy), tok, tmp_path / "out")
    msg = str(e.value)
    assert "3 malformed row(s)" in msg
    assert f"{messy}:3: messages[1]: empty assistant turn" in msg
    assert f"{messy}:6: messages[0]: 'content' must be a string, got NoneType" in msg
    assert f"{messy}:8: sample is" in msg and "longer than max_seq_len=128" in msg


def test_skip_policy_counts_what_it_skipped(tok, messy, tmp_path):
    report = prepare(cfg_for(messy, "bad_rows=skip", "val_fraction=0.2"), tok, tmp_path / "out")
    assert report.skipped_rows == 3 and len(report.bad) == 3
    assert report.train_rows + report.val_rows == 7 and report.val_rows == 1
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped_rows"] == 3
    train = read_prepared(tmp_path / "out" / "train.jsonl")
    assert all(len(r["input_ids"]) == len(r["assistant_masks"]) for r in train)
    assert {r["where"] for r in train}.isdisjoint({f"{messy}:3", f"{messy}:6", f"{messy}:8"})


def test_split_and_weights_never_leak_validation_rows(tok, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(good(i)) + "\n" for i in range(20)))
    b.write_text("".join(json.dumps(good(100 + i)) + "\n" for i in range(10)))
    cfg = load(None, [f"data=[{{path: '{a}', weight: 2.0}}, {{path: '{b}#5', weight: 0.4}}]",
                      "val_fraction=0.25"], cls=SFTConfig)
    report = prepare(cfg, tok, tmp_path / "out")
    train = read_prepared(tmp_path / "out" / "train.jsonl")
    val = read_prepared(tmp_path / "out" / "val.jsonl")
    # a: 20 rows -> 5 val, 15 train x2 = 30; b#5: 5 rows -> 1 val, 4 train x0.4 -> 2.
    assert (report.train_rows, report.val_rows) == (32, 6)
    assert {r["where"] for r in val}.isdisjoint({r["where"] for r in train})


def test_split_and_weighted_helpers():
    tr, va = split(list(range(10)), 0.1, 0)
    assert len(va) == 1 and sorted(tr + va) == list(range(10))
    assert split([1], 0.5, 0) == ([1], [])
    assert len(weighted(list(range(10)), 0.25, 0)) == 2  # round(2.5) = 2 (banker's rounding)
    assert len(weighted(list(range(3)), 3.0, 0)) == 9
