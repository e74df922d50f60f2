"""Task runtimes: how each task family starts an agent sandbox and grades a submission.

  swe         SWE-bench rows (hub id or json/jsonl/parquet) and shipped SWE-style task dirs (swe_dir)
  terminal    Terminal-Bench task dirs (task.yaml, Dockerfile, run-tests.sh, tests/)
  code_tests  competitive-programming rows graded by stdin/stdout or function-call test cases

Every runtime returns a `GradeResult` (common.py) whose outcome is three-valued; rewards turn it into
a reward. Import the submodules directly; this package imports nothing.
"""
