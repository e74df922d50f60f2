"""Data loaders: training tasks (tasks.py: SWE-bench rows, SWE-style dirs, Terminal-Bench dirs,
code-test problems) and chat data for SFT (messages.py). Import the submodules directly."""
