"""Multi-turn agent: tool-call parsers (hermes, qwen3_coder), tools (bash, editor, submit), the episode loop.

Import the submodules directly (iquest_rl.agent.loop, .parsers, .tools, ...); this package imports nothing.
"""
