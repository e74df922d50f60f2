"""SFT data preparation: load sources, render per branch, apply the bad-rows policy, split, mix.

Runs once, in the launching process, and writes `<run_dir>/data/{train,val}.jsonl` (pre-tokenized
`input_ids` + `assistant_masks`) and `report.json`, so every rank trains on identical data and
malformed rows are reported once. Mixing: a source's training rows are repeated/sub-sampled to
`weight × its row count`; the validation split is taken per source before weighting, so repeated
rows never leak into validation.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iquest_rl.config import SFTConfig
from iquest_rl.data.messages import BadRow, MessagesDataError, load_source, sample_rows

from .render import RenderedRow, RenderError, render_row

MAX_LISTED = 20
"""Bad rows listed in an error message (all are in report.json)."""


@dataclass
class DataReport:
    train_rows: int = 0
    """Training rows after weighting."""
    val_rows: int = 0
    """Validation rows."""
    train_tokens: int = 0
    """Tokens in the training rows."""
    target_tokens: int = 0
    """Assistant (loss) tokens in the training rows."""
    skipped_rows: int = 0
    """Malformed rows skipped (bad_rows=skip)."""
    bad: list[str] = field(default_factory=list)
    """FILE:LINE: what, for each malformed row."""


def prepare(cfg: SFTConfig, tokenizer, out_dir: str | Path) -> DataReport:
    """Render all sources into out_dir/{train,val}.jsonl; raise MessagesDataError per cfg.bad_rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = DataReport()
    train: list[RenderedRow] = []
    val: list[RenderedRow] = []
    think = (cfg.model.think_start, cfg.model.think_end)
    for k, src in enumerate(cfg.data):
        loaded = load_source(src.path, seed=cfg.seed + k)
        bad = list(loaded.bad)
        rendered = []
        for row in loaded.rows:
            try:
                rendered.append(render_row(tokenizer, row, cfg.branch, cfg.max_seq_len, think))
            except RenderError as e:
                bad.append(BadRow(row.where, str(e)))
        report.bad.extend(str(b) for b in bad)
        if not rendered:
            raise MessagesDataError(f"{src.path}: no usable rows" + _listing(bad))
        tr, va = split(rendered, cfg.val_fraction, cfg.seed + k)
        train.extend(weighted(tr, src.weight, cfg.seed + k))
        val.extend(va)
    report.skipped_rows = len(report.bad)
    if report.bad and cfg.bad_rows == "fail":
        raise MessagesDataError(
            f"{len(report.bad)} malformed row(s) (set bad_rows=skip to skip them)" + _listing(report.bad))
    for b in report.bad:
        print(f"iquest-rl sft: skipping {b}", file=sys.stderr)
    random.Random(cfg.seed).shuffle(train)
    report.train_rows, report.val_rows = len(train), len(val)
    report.train_tokens = sum(len(r.input_ids) for r in train)
    report.target_tokens = sum(sum(r.assistant_masks) for r in train)
    _write(out_dir / "train.jsonl", train)
    _write(out_dir / "val.jsonl", val)
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=1))
    return report


def split(rows: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded hold-out: (train, val); val gets round(fraction × n) rows, at least 1 when fraction > 0."""
    if val_fraction <= 0 or len(rows) < 2:
        return list(rows), []
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_val = min(len(rows) - 1, max(1, round(val_fraction * len(rows))))
    return order[n_val:], order[:n_val]


def weighted(rows: list, weight: float, seed: int) -> list:
    """round(weight × len(rows)) rows (at least 1): repeats for weight > 1, a sample for weight < 1."""
    if weight == 1.0:
        return list(rows)
    return sample_rows(rows, max(1, round(weight * len(rows))), seed)


def read_prepared(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[RenderedRow]) -> None:
    path.write_text("".join(
        json.dumps({"input_ids": r.input_ids, "assistant_masks": r.assistant_masks, "where": r.where}) + "\n"
        for r in rows))


def _listing(bad: list) -> str:
    lines = [f"\n  {b}" for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"\n  ... and {len(bad) - MAX_LISTED} more")
    return "".join(lines)
