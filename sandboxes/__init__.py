"""Sandboxes: isolated places where agents act and tests run. Depends only on iquest_rl.types."""
