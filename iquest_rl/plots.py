"""PNG curves of a run (reward, lengths, phase timings) drawn from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from .metrics import read_metrics

PANELS = {
    "reward.png": ("Reward", ["reward/mean", "reward/pass_rate", "eval/reward_mean"]),
    "length.png": ("Lengths (tokens)", ["response/length_mean", "response/thinking_tokens_mean",
                                        "response/answer_tokens_mean"]),
    "timing.png": ("Seconds per phase", ["time/generate", "time/reward", "time/train", "time/sync", "time/step"]),
    "train.png": ("Learner", ["train/loss", "train/grad_norm", "train/clip_frac", "train/entropy",
                              "train/mismatch/kl"]),
}


def write_plots(run_dir: str | Path) -> list[Path]:
    """Draw every panel that has data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    written = []
    for fname, (title, keys) in PANELS.items():
        series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, pts in series.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = Path(run_dir) / "plots" / fname
        out.parent.mkdir(exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        written.append(out)
    return written
