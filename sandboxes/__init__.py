"""Sandboxes: isolated places where agents act and tests run. Depends only on iquest_rl.types."""

from pathlib import Path


def images_dir() -> Path:
    """Folder of the shipped image recipes (bootstrap_base.sh, Dockerfiles)."""
    return Path(__file__).parent / "images"
