"""`iquest-rl eval swe|terminal|code --model PATH_OR_HUB_ID`: evaluate a checkpoint with the agent.

  iquest-rl eval swe --instances builtin:swe_tasks --model runs/sft/final --report-dir reports/sft
  iquest-rl eval code --tasks lcb.jsonl --model Org/Model --config experiments/code_grpo.yaml --samples 10

The episodes are `iquest-rl run`'s: RolloutWorker actors (one vLLM engine each) run the same agent
loop, tool format and sandbox settings (the recipe's model, rollout and sandbox blocks with --config),
and RewardWorker actors grade them, through Ray (phases.SampleStream). Each sample is written to the
report directory as it finishes (eval_report.py): a rerun with the same --report-dir keeps the
finished samples and runs only the rest; Ctrl-C keeps every finished sample (exit status 130). The
console shows the progress bar and the summary; the engines' output goes to <report>/eval.log.
The in-run evaluation (`eval_every`) goes through `evaluate_tasks` too.

Choices where the benchmarks leave room:
- temperature: --temperature; else greedy (0) with --samples 1, else the recipe's
  rollout.sampling.temperature (1.0 without a recipe);
- grading: each benchmark's own rule (swe: resolved, no penalties; terminal: every test passes;
  code: fraction of tests, passed = all), not the recipe's reward block;
- instance status, accuracy and predictions.jsonl are sample 0's; pass@k uses every sample;
- a sample that ended in an infrastructure error is not a result: a rerun runs it again.
Exit status: 0 when every sample was graded, 1 when any ended in an infrastructure error or an error
stopped the evaluation (one line on the console, the traceback in eval.log), 2 on bad arguments, 130
when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from .config.rollout import AgentConfig, SamplingConfig
from .types import RewardResult, Task, Trajectory

BENCH_REWARD = {
    "swe": {"name": "swe", "params": {"max_penalty": 0.0}},
    "swe_dir": {"name": "swe", "params": {"max_penalty": 0.0}},
    "terminal": {"name": "terminal"},
    "harbor": {"name": "terminal"},
    "code_tests": {"name": "code_tests"},
}
"""Task family -> the reward term that grades it as its benchmark does."""
IDENTITY = ("model", "agent", "sampling", "seed", "tool_call_format")
"""eval_config.json fields a rerun into the same report dir must match."""


def add_model_arguments(sp: argparse.ArgumentParser) -> None:
    """The --model options of one `iquest-rl eval` subcommand (--model itself sits with the others)."""
    g = sp.add_argument_group("with --model")
    g.add_argument("--config", default=None, help="recipe whose model/rollout/sandbox blocks are used")
    g.add_argument("--samples", type=int, default=1, help="samples per instance (pass@k for k <= samples)")
    g.add_argument("--temperature", type=float, default=None,
                   help="default: 0 with --samples 1, else the recipe's (1.0 without one)")
    g.add_argument("--max-turns", type=int, default=None, help="agent turns per episode (default: the recipe's)")
    g.add_argument("--engines", type=int, default=None, help="vLLM engines (default: rollout.num_workers)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (each sample's seed derives from it)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. rollout.max_model_len=32768 (repeatable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- the sample loop (Ray-free: phases.SampleStream is the Ray side) ------------------------------

@dataclass(frozen=True)
class SampleJob:
    """One episode to run and grade: sample `index` of `task`."""

    task: Task
    index: int
    seed: int
    agent: AgentConfig
    sampling: SamplingConfig


@dataclass
class SampleResult:
    job: SampleJob
    trajectory: Trajectory
    reward: RewardResult
    grade: Any
    """The GradeResult the reward came from; None when the family has no grader or scoring failed."""


class Stream(Protocol):
    """Runs jobs somewhere and hands back their results as they finish (phases.SampleStream)."""

    capacity: int
    """Jobs it takes in flight at once."""

    def submit(self, job: SampleJob) -> None: ...

    def poll(self, timeout: float) -> list[SampleResult]:
        """Results finished since the last poll; waits up to `timeout` seconds for the first one."""
        ...

    def in_flight(self) -> int: ...


def run_jobs(jobs: list[SampleJob], stream: Stream, on_done: Callable[[SampleResult], None],
             timeout_s: float | None = None) -> None:
    """Keep `stream` full until every job is done; on_done runs (in this thread) as each finishes.
    KeyboardInterrupt propagates at once: what on_done wrote stays written."""
    from .phases import PhaseTimeout

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    queue = deque(jobs)
    while queue or stream.in_flight():
        while queue and stream.in_flight() < stream.capacity:
            stream.submit(queue.popleft())
        for result in stream.poll(1.0):
            on_done(result)
        if deadline is not None and time.monotonic() > deadline:
            raise PhaseTimeout(f"phase eval: {stream.in_flight() + len(queue)} of {len(jobs)} samples "
                               "unfinished at the deadline")


def sample_seed(base: int, task_id: str, k: int) -> int:
    """A sample's seed: independent of the order samples run in, so reruns sample the same (31 bits)."""
    return int.from_bytes(hashlib.sha256(f"{base}:{task_id}:{k}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def agent_for(task: Task, agent: AgentConfig) -> AgentConfig:
    """`agent` in the mode the task's family needs (multi-turn in a sandbox, or one answer)."""
    from sandboxes.runtimes.registry import family_class

    mode = "multi_turn" if family_class(task.source).multi_turn else "single_turn"
    return agent if agent.mode == mode else agent.model_copy(update={"mode": mode})


def evaluate_tasks(stream: Stream, tasks: list[Task], samples: int, seed: int, agent: AgentConfig,
                   sampling: SamplingConfig, report: Path, info: dict[str, Any], progress: bool = False,
                   timeout_s: float | None = None) -> dict[str, Any]:
    """Run every sample of `tasks` not yet finished in `report`, writing each as it ends; then the
    derived views and summary.json (also when interrupted). Returns the summary."""
    from . import eval_report as er

    report.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # Samples beyond --samples (an earlier run asked for more) stay on disk but out of this summary.
    recs = {key: r for key, r in er.load_samples(report, tasks).items() if key[1] < samples}
    jobs = [SampleJob(t, k, sample_seed(seed, t.task_id, k), agent_for(t, agent), sampling)
            for k in range(samples) for t in tasks if not er.finished(recs.get((t.task_id, k)))]
    bar = _progress(len(tasks) * samples, len(tasks) * samples - len(jobs), info.get("family", "eval"), progress)
    counts = {"resolved": sum(r["status"] == "resolved" for r in recs.values() if er.finished(r)),
              "infra": 0, "new": 0}

    def on_done(res: SampleResult) -> None:
        job = res.job
        rec = er.write_sample(report, job.task, job.index, job.seed, res.trajectory, res.reward, res.grade)
        recs[(job.task.task_id, job.index)] = rec
        er.write_instance_view(report, job.task.task_id,
                               {k: r for (tid, k), r in recs.items() if tid == job.task.task_id})
        counts["new"] += 1
        counts["resolved"] += rec["status"] == "resolved"
        counts["infra"] += rec["status"] == "infra_error"
        if bar is not None:
            bar.set_postfix(resolved=counts["resolved"], infra_errors=counts["infra"], refresh=False)
            bar.update(1)

    try:
        run_jobs(jobs, stream, on_done, timeout_s)
    finally:
        if bar is not None:
            bar.close()
        summary = er.summarise(tasks, recs, samples, {**info, "new_samples": counts["new"],
                                                      "wall_s": round(time.monotonic() - t0, 2)})
        er.write_outputs(report, tasks, recs, summary, str(info.get("model", "")))
    return summary


def _progress(total: int, done: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    from .console import stream

    return tqdm(total=total, initial=done, desc=f"eval {desc}", unit="sample", file=stream(), dynamic_ncols=True)


# ---- the command ------------------------------------------------------------------------------------

def _swe_instances(args: argparse.Namespace) -> list[Task]:
    from .evaluate import load_swe_instances

    return load_swe_instances(args.instances, args.split, args.limit, args.image_template, args.row_format)


def _dir_tasks(args: argparse.Namespace) -> list[Task]:
    """Terminal-Bench 1 and Harbor task dirs (either layout, or a mix); a bad dir stops the eval."""
    from sandboxes.runtimes.registry import dir_tasks

    from .data.tasks import resolve_path

    return dir_tasks(resolve_path(args.tasks), limit=args.limit)


def _family_tasks(family: str) -> Callable[[argparse.Namespace], list[Task]]:
    def load(args: argparse.Namespace) -> list[Task]:
        from sandboxes.runtimes.registry import family_class

        from .data.tasks import resolve_path

        return family_class(family).load(resolve_path(args.tasks), args.limit)
    return load


LOADERS: dict[str, Callable[[argparse.Namespace], list[Task]]] = {
    "swe": _swe_instances, "terminal": _dir_tasks, "code": _family_tasks("code_tests")}
"""`iquest-rl eval <command>` -> its task loader (--instances for swe, --tasks otherwise)."""


def load_tasks(args: argparse.Namespace) -> list[Task]:
    """The subcommand's tasks, narrowed by --instance-ids."""
    tasks = LOADERS[args.family](args)
    if args.instance_ids:
        want = set(args.instance_ids)
        missing = want - {t.task_id for t in tasks}
        if missing:
            raise ValueError(f"--instance-ids: not among the loaded tasks: {', '.join(sorted(missing))}")
        tasks = [t for t in tasks if t.task_id in want]
    if not tasks:
        raise ValueError("no tasks to evaluate")
    return tasks


def resolve_config(args: argparse.Namespace, tasks: list[Task]) -> Any:
    """The eval's RunConfig: the recipe's model/rollout/sandbox/ray blocks, the benchmark's reward,
    then the command line (--model, --temperature, ..., --set)."""
    from .config import RunConfig, apply_overrides, kind_of, load
    from .config.base import validate

    data: dict[str, Any] = {}
    if args.config:
        if kind_of(args.config) is not RunConfig:
            raise ValueError(f"{args.config}: --config needs a run recipe (model/rollout/sandbox blocks)")
        recipe = load(args.config)
        data = recipe.model_dump(mode="json", include={"model", "rollout", "sandbox", "ray"})
    families = {t.source for t in tasks}
    terms: list[dict[str, Any]] = []
    for f in sorted(families):
        if f in BENCH_REWARD and BENCH_REWARD[f] not in terms:
            terms.append(BENCH_REWARD[f])  # terminal and harbor tasks share one grader
    if len(terms) != 1:
        raise ValueError(f"no single benchmark grader for task families {sorted(families)}")
    data = {**data, "name": "eval", "reward": {"terms": terms}}
    cli = [f"model.path={json.dumps(args.model)}"]
    if args.max_turns is not None:
        cli.append(f"rollout.agent.max_turns={args.max_turns}")
    if args.engines is not None:
        cli.append(f"rollout.num_workers={args.engines}")
    if args.workers is not None:
        cli.append(f"sandbox.max_concurrency={args.workers}")
    if args.docker_host:
        cli.append(f"sandbox.docker_host={json.dumps(args.docker_host)}")
    if getattr(args, "base_map", None):
        from .evaluate import _base_map

        cli.append(f"sandbox.base_map={json.dumps(_base_map(args.base_map))}")
    if getattr(args, "agent_user", "1000:1000") != "1000:1000":
        cli.append(f"sandbox.agent_user={json.dumps(args.agent_user)}")
    if getattr(args, "test_timeout", None) is not None:
        cli.append(f"sandbox.test_timeout_s={args.test_timeout}")
    if args.temperature is not None:
        cli.append(f"rollout.sampling.temperature={args.temperature}")
    elif args.samples == 1:
        cli.append("rollout.sampling.temperature=0")
    overrides = [*cli, *args.set]
    data = apply_overrides(data, overrides)
    # Every family of one command shares a mode; the recipe's may be the other one.
    data = apply_overrides(data, [f"rollout.agent.mode={agent_for(tasks[0], AgentConfig()).mode}"])
    return validate(RunConfig, data, source=str(args.config or "<eval>"), overrides=overrides)


def check_identity(report: Path, ident: dict[str, Any]) -> None:
    """Refuse to mix samples of different evaluations in one report dir; record this one's."""
    path = report / "eval_config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in IDENTITY if old.get(k) != ident.get(k)]
        if diff:
            raise ValueError(f"{path}: this report dir holds samples of another evaluation ({', '.join(diff)} "
                             f"differ, e.g. {diff[0]}: {old.get(diff[0])!r} != {ident.get(diff[0])!r}); "
                             "use another --report-dir")
        return
    report.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ident, indent=2))


def eval_model_main(args: argparse.Namespace, cluster: Any = None) -> int:
    """Run `iquest-rl eval <family> --model ...` from parsed arguments. `cluster`: actors already
    launched for this config (tests share one engine across commands); None = launch and shut down."""
    from .config import ConfigError

    report = Path(args.report_dir)
    try:
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        tasks = load_tasks(args)
        cfg = resolve_config(args, tasks)
        ident = {"model": args.model, "agent": cfg.rollout.agent.model_dump(mode="json"),
                 "sampling": cfg.rollout.sampling.model_dump(mode="json"), "seed": args.seed,
                 "tool_call_format": cfg.model.tool_call_format}
        check_identity(report, ident)
    except (FileNotFoundError, ValueError, ConfigError) as e:
        print(f"iquest-rl eval: {e}", file=sys.stderr)
        return 2
    if cfg.rollout.sampling.temperature == 0 and args.samples > 1:
        print("iquest-rl eval: warning: --samples > 1 at temperature 0 gives identical samples", file=sys.stderr)
    info = {"family": args.family, "model": args.model, "config": args.config, "temperature":
            cfg.rollout.sampling.temperature, "max_turns": cfg.rollout.agent.max_turns, "seed": args.seed}
    owned = cluster is None
    if owned:
        from .versions import check

        check()
    from .console import session, stopped
    from .phases import SampleStream

    log_path = report / "eval.log"
    print(f"iquest-rl eval: {report} (engine logs: {log_path})", file=sys.stderr, flush=True)
    with session(log_path) as console:
        try:
            if owned:
                cluster = launch_for(cfg, report)
            summary = evaluate_tasks(SampleStream(cluster, cfg.sandbox.max_concurrency), tasks, args.samples,
                                     args.seed, cfg.rollout.agent, cfg.rollout.sampling, report, info,
                                     progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"iquest-rl eval: interrupted; finished samples are kept in {report} (run again to finish)",
                  file=console)
            return 130
        except Exception as e:
            stopped("iquest-rl eval", e, log_path, console)
            print(f"iquest-rl eval: finished samples are kept in {report} (run again to finish)", file=console)
            return 1
        finally:
            if owned and cluster is not None:
                cluster.shutdown()
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_ids") and not k.startswith("by_")}))
    print(f"report: {report}")
    return 1 if summary["samples"]["infra_error"] else 0


def launch_for(cfg: Any, report: Path) -> Any:
    """Rollout and reward workers (no learners) for an evaluation writing to `report`."""
    from .launch import launch

    run_id = f"eval-{hashlib.sha1(str(report.resolve()).encode()).hexdigest()[:8]}"
    return launch(cfg, run_id, learners=False)
