"""Benchmarks: each `bench/<name>.py` prints one JSON object; `python -m bench.run_all` runs them all."""
