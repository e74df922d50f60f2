"""`iquest-rl eval`: grade predictions or a scripted agent on SWE-style or Terminal-Bench tasks.

  iquest-rl eval swe --instances builtin:swe_tasks|DIR|FILE|HUB_ID [--predictions FILE | --agent oracle|nop]
  iquest-rl eval terminal --tasks builtin:terminal_tasks|DIR --agent oracle|nop   (Terminal-Bench 1 or Harbor dirs)
  iquest-rl eval swe|terminal|code ... --model PATH_OR_HUB_ID [--samples K ...]   (see eval_model.py)

Writes a report directory like the SWE-bench / Terminal-Bench harnesses:
  <report>/<instance_id>/report.json    status (resolved|unresolved|infra_error), per-test statuses, reason
  <report>/<instance_id>/test_output.txt grading log (head and tail)
  <report>/<instance_id>/patch.diff      the graded patch (swe)
  <report>/<instance_id>/oracle.txt      how the reference solution ran: exit status, output (terminal
                                         --agent oracle; also under "oracle" in report.json)
  <report>/summary.json                  counts, resolved/unresolved/error ids, accuracy, timings
  summary.json also holds mean_reward (a Harbor verifier's fractional reward counts as is) and
  load_errors (task dirs that could not be read; the others still ran)
Exit status: 0 when every instance was graded, 1 when any ended in an infrastructure error or a task
dir could not be read, 2 on bad arguments or input files (one line naming the file, the line and the
field) or when no instance matched the predictions or --instance-ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from iquest_rl.eval_model import add_model_arguments
from iquest_rl.types import Outcome, Task

STATUS = {Outcome.PASSED: "resolved", Outcome.FAILED: "unresolved", Outcome.INFRA_ERROR: "infra_error"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iquest-rl eval", description="grade predictions or a scripted agent")
    sub = p.add_subparsers(dest="family", required=True)
    swe = sub.add_parser("swe", help="SWE-bench rows or SWE-style task dirs")
    swe.add_argument("--instances", required=True,
                     help="builtin:swe_tasks, a directory of task dirs, a json/jsonl/parquet file or a hub id")
    how = swe.add_mutually_exclusive_group(required=True)
    how.add_argument("--predictions", help="json/jsonl of {instance_id, model_patch[, model_name_or_path]}")
    how.add_argument("--agent", choices=["oracle", "nop"], help="oracle = the gold patch, nop = an empty patch")
    how.add_argument("--model", help="a checkpoint (path or hub id) run with the training agent")
    swe.add_argument("--split", default="", help="hub split ('' = test, else the dataset's only split)")
    swe.add_argument("--image-template", default="",
                     help="image name per row, e.g. 'myreg/sweb.eval.x86_64.{id}:latest' (fields: id, id_1776, "
                          "id_s, instance_id, repo, version, image_name); default: the row's image, else its format's")
    swe.add_argument("--format", default="", dest="row_format",
                     help="row format: swe-bench, swe-gym, swe-rebench, swe-smith ('' = detected per row)")
    swe.add_argument("--test-timeout", type=_bounded(float, 1, 86400), default=None,
                     help="seconds for one test run (1..86400; default 600, or the --config recipe's "
                          "sandbox.test_timeout_s)")
    term = sub.add_parser("terminal", help="Terminal-Bench 1 (task.yaml) or Harbor (task.toml) task dirs")
    term.add_argument("--tasks", required=True,
                      help="builtin:terminal_tasks, builtin:harbor_tasks or a directory of task dirs (either layout)")
    term_how = term.add_mutually_exclusive_group(required=True)
    term_how.add_argument("--agent", choices=["oracle", "nop"],
                          help="oracle = run solution.sh / solution.yaml / solution/solve.sh, nop = do nothing")
    term_how.add_argument("--model", help="a checkpoint (path or hub id) run with the training agent")
    term.add_argument("--base-map", action="append", default=[], metavar="FROM=IMAGE",
                      help="build FROM lines naming FROM (with or without tag) from the local IMAGE, over the "
                           "defaults (see sandboxes/runtimes/images.py); repeatable")
    term.add_argument("--agent-user", default="1000:1000", metavar="UID:GID",
                      help="user of the agent and of the tests (default 1000:1000; 0:0 = root without capabilities)")
    code = sub.add_parser("code", help="competitive-programming rows (LiveCodeBench-style or builtin:code_tasks)")
    code.add_argument("--tasks", required=True, help="builtin:code_tasks or a json/jsonl file of rows")
    code.add_argument("--model", required=True, help="a checkpoint (path or hub id) answering each problem")
    for sp in (swe, term, code):
        add_model_arguments(sp)
        sp.add_argument("--report-dir", default=None, help="default: eval_reports/<family>-<time>")
        sp.add_argument("--instance-ids", nargs="+", default=None, help="grade only these ids")
        sp.add_argument("--limit", type=_bounded(int, 0, 10**9), default=0, help="first N instances; 0 = all")
        sp.add_argument("--workers", type=_bounded(int, 1, 256), default=None,
                        help="instances graded in parallel (1..256, default 1; with --model: episodes in flight "
                             "per engine, default the recipe's sandbox.max_concurrency)")
        sp.add_argument("--docker-host", default=None, help="engine URL (default: DOCKER_HOST or local socket)")
    return p


def _bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: `kind` within [low, high] (finite), else a usage error naming the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high}")
        return value
    return parse


def load_swe_instances(spec: str, split: str = "", limit: int = 0, image_template: str = "",
                       row_format: str = "") -> list[Task]:
    """A directory of SWE task dirs (family swe_dir), else SWE rows of any format (family swe)."""
    from iquest_rl.data.tasks import resolve_path
    from sandboxes.runtimes import swe, swe_dir

    path = resolve_path(spec)
    if os.path.isdir(path):
        return swe_dir.load_tasks(path, limit)
    return swe.load_tasks(path, limit, split, image_template, row_format)


def load_predictions(path: str) -> dict[str, str]:
    """SWE-bench predictions -> {instance_id: model_patch}: a JSON list, JSON lines (one line too), or
    {id: {"model_patch": ...}}. ValueError naming the file, the line (or row) and the field."""
    from sandboxes.runtimes.common import read_json_rows

    rows = read_json_rows(path)
    if len(rows) == 1 and isinstance(rows[0][1], dict) and "instance_id" not in rows[0][1]:
        mapping = rows[0][1]  # {id: {...}}: the row is the id's value
        rows = [(f"{path}[{k!r}]", {"instance_id": k, **v} if isinstance(v, dict) else v) for k, v in mapping.items()]
    out: dict[str, str] = {}
    first: dict[str, str] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a prediction must be a JSON object, got {type(row).__name__}")
        rid, patch = row.get("instance_id"), row.get("model_patch")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"{where}: field 'instance_id' is missing or not a non-empty string")
        if "model_patch" not in row or not (patch is None or isinstance(patch, str)):
            raise ValueError(f"{where}: field 'model_patch' is missing or not a string (null = empty patch)")
        if rid in first:
            raise ValueError(f"{where}: instance_id {rid!r} was already given at {first[rid]}")
        first[rid] = where
        out[rid] = patch or ""
    if not out:
        raise ValueError(f"{path}: no predictions")
    return out


def select(tasks: list[Task], wanted: list[str] | None, what: str, source: str) -> list[Task]:
    """The tasks whose id is in `wanted` (None = all). Ids that match nothing are reported on
    stderr; ValueError when nothing is left to grade."""
    if wanted is None:
        if not tasks:
            raise ValueError(f"{source}: no instances")
        return tasks
    known = {t.task_id for t in tasks}
    missing = [i for i in dict.fromkeys(wanted) if i not in known]
    chosen = [t for t in tasks if t.task_id in set(wanted)]
    shown = f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
    if not chosen:
        raise ValueError(f"nothing to grade: none of the {len(missing)} id(s) of {what} is an instance of "
                         f"{source} ({len(tasks)} instances): {shown}")
    if missing:
        print(f"iquest-rl eval: {len(missing)} id(s) of {what} match no instance of {source}, not graded: "
              f"{shown}", file=sys.stderr)
    return chosen


def _write_instance(report_dir: str, task_id: str, grade, patch: str | None,
                    oracle: dict[str, Any] | None = None) -> dict[str, Any]:
    if task_id in ("", ".", "..") or "/" in task_id or "\0" in task_id:
        raise ValueError(f"instance id {task_id!r} cannot name a folder of the report {report_dir}")
    d = os.path.join(report_dir, task_id)
    os.makedirs(d, exist_ok=True)
    rec = {"instance_id": task_id, "status": STATUS[grade.outcome], "reason": grade.reason,
           "reward": _reward(grade), "tests_passed": grade.passed, "tests_total": grade.total,
           "tests": grade.tests, "duration_s": round(grade.duration_s, 3)}
    if oracle is not None:
        rec["oracle"] = oracle
        with open(os.path.join(d, "oracle.txt"), "w") as f:
            f.write(f"{oracle.get('solution', '?')}: exit status {oracle.get('exit_code')}, timed out "
                    f"{oracle.get('timed_out')}, {oracle.get('duration_s', 0):.1f}s\n{oracle.get('output', '')}")
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump(rec, f, indent=2)
    with open(os.path.join(d, "test_output.txt"), "w") as f:
        f.write(grade.log)
    if patch is not None:
        with open(os.path.join(d, "patch.diff"), "w") as f:
            f.write(patch)
    return rec


def _reward(grade) -> float | None:
    """The task's reward: its verifier's own (Harbor) or 1/0 by outcome; None for an infrastructure error."""
    if grade.outcome is Outcome.INFRA_ERROR:
        return None
    return grade.score if grade.score is not None else float(grade.outcome is Outcome.PASSED)


def _run(family: str, tasks: list[Task], grade_one: Callable[[Task], tuple[Any, ...]], report_dir: str,
         workers: int, load_errors: dict[str, str] | None = None) -> dict[str, Any]:
    """grade_one(task) -> (grade, patch or None[, oracle record or None])."""
    os.makedirs(report_dir, exist_ok=True)
    t0 = time.monotonic()

    def one(task: Task) -> dict[str, Any]:
        grade, patch, *oracle = grade_one(task)
        rec = _write_instance(report_dir, task.task_id, grade, patch, oracle[0] if oracle else None)
        ran = ""
        if rec.get("oracle"):
            ran = f" [oracle exit {rec['oracle'].get('exit_code')}{', timed out' if rec['oracle'].get('timed_out') else ''}]"
        print(f"{task.task_id}: {rec['status']} ({rec['tests_passed']}/{rec['tests_total']}){ran} "
              f"{grade.reason[:120]}", flush=True)
        return rec

    with ThreadPoolExecutor(max_workers=max(1, workers or 1)) as ex:
        recs = list(ex.map(one, tasks))
    ids = {s: sorted(r["instance_id"] for r in recs if r["status"] == s) for s in STATUS.values()}
    graded = len(recs) - len(ids["infra_error"])
    rewards = [r["reward"] for r in recs if r["reward"] is not None]
    summary = {
        "family": family, "total_instances": len(recs), "completed_instances": graded,
        "resolved_instances": len(ids["resolved"]), "unresolved_instances": len(ids["unresolved"]),
        "error_instances": len(ids["infra_error"]),
        "resolved_ids": ids["resolved"], "unresolved_ids": ids["unresolved"], "error_ids": ids["infra_error"],
        "accuracy": len(ids["resolved"]) / graded if graded else 0.0,
        "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        "load_errors": dict(load_errors or {}),
        "wall_s": round(time.monotonic() - t0, 2),
    }
    with open(os.path.join(report_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def eval_swe(args: argparse.Namespace, runtimes) -> dict[str, Any]:
    """Grade given patches (predictions, the gold patch, or none) as the SWE-bench harness does."""
    from sandboxes.runtimes.swe import submitted

    preds = load_predictions(args.predictions) if args.predictions else None
    tasks = load_swe_instances(args.instances, args.split, args.limit, args.image_template, args.row_format)
    if preds is not None:
        tasks = select(tasks, list(preds), f"the predictions ({args.predictions})", args.instances)
    tasks = select(tasks, args.instance_ids, "--instance-ids", args.instances)

    def grade_one(task: Task):
        if preds is not None:
            patch = preds.get(task.task_id, "")
        else:
            patch = task.meta.get("patch", "") if args.agent == "oracle" else ""
        return runtimes.grade(task, submitted(task, patch)), patch

    return _run("swe", tasks, grade_one, args.report_dir, args.workers)


def eval_terminal(args: argparse.Namespace, runtimes) -> dict[str, Any]:
    """Terminal-Bench 1 and Harbor task dirs (a mix is fine): the oracle (or nothing) acts in each task's
    agent sandbox, then the grade as in training. A bad task dir is reported; the others still run."""
    from iquest_rl.data.tasks import resolve_path
    from sandboxes.runtimes.family import evaluate
    from sandboxes.runtimes.registry import dir_tasks

    bad: dict[str, str] = {}

    def report(d: str, e: Exception) -> None:
        bad[d] = f"{type(e).__name__}: {e}"
        print(f"{d}: not loaded: {e}", file=sys.stderr, flush=True)

    tasks = dir_tasks(resolve_path(args.tasks), on_error=report, limit=args.limit)
    tasks = select(tasks, args.instance_ids, "--instance-ids", args.tasks)

    def grade_one(task: Task):
        runtime = runtimes.get(task.source)
        if args.agent != "oracle":
            return evaluate(runtime, task, None), None
        ran: dict[str, Any] = {}

        def oracle(t: Task, sb):
            ran.update(runtime.oracle(t, sb))
            return ran

        grade = evaluate(runtime, task, oracle)
        return grade, None, ran or {"solution": None, "exit_code": None, "timed_out": False,
                                    "output": f"the solution did not run: {grade.reason}", "duration_s": 0.0}

    return _run("terminal", tasks, grade_one, args.report_dir, args.workers, bad)


COMMANDS = {"swe": eval_swe, "terminal": eval_terminal}
"""`iquest-rl eval <command>` -> its function."""


def _base_map(items: list[str]) -> dict[str, str]:
    """["FROM=IMAGE", ...] -> {FROM: IMAGE}; ValueError naming a malformed item."""
    out = {}
    for item in items:
        src, eq, dst = item.partition("=")
        if not (src and eq and dst):
            raise ValueError(f"--base-map {item!r}: expected FROM=IMAGE")
        out[src] = dst
    return out


def _quiet() -> None:
    """No third-party progress bars in the report's output (datasets' "Generating ... split")."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def eval_main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.report_dir is None:
        args.report_dir = os.path.join("eval_reports", f"{args.family}-{time.strftime('%Y%m%d-%H%M%S')}")
    if getattr(args, "model", None):
        from .eval_model import eval_model_main

        return eval_model_main(args)
    from pydantic import ValidationError

    from iquest_rl.config.sandbox import SandboxConfig
    from sandboxes.runtimes.family import RuntimeContext
    from sandboxes.runtimes.registry import Runtimes

    _quiet()
    try:
        sandbox = SandboxConfig(docker_host=args.docker_host, base_map=_base_map(getattr(args, "base_map", [])),
                                agent_user=getattr(args, "agent_user", "1000:1000"))
    except (ValueError, ValidationError) as e:
        print(f"iquest-rl eval: {e}", file=sys.stderr)
        return 2
    runtimes = Runtimes(RuntimeContext(sandbox=sandbox, test_timeout_s=getattr(args, "test_timeout", None)))
    try:
        summary = COMMANDS[args.family](args, runtimes)
    except (FileNotFoundError, ValueError) as e:
        print(f"iquest-rl eval: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_ids")}))
    print(f"report: {args.report_dir}")
    return 1 if summary["error_instances"] or summary["load_errors"] else 0


if __name__ == "__main__":
    sys.exit(eval_main())
