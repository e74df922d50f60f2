"""iquest-rl: RL post-training for code LLMs. Importing this package has no side effects."""

__version__ = "0.1.0"
