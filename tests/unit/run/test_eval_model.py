"""The evaluation driver's own logic with a stand-in for the Ray side (the real one is exercised end to
end in tests/e2e/test_eval_model.py): report dir, summary, pass@k, resume, interruption, config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from iquest_rl.config import AgentConfig, ConfigError, SamplingConfig
from iquest_rl.eval_model import SampleResult, evaluate_tasks, resolve_config, sample_seed
from iquest_rl.evaluate import _parser
from iquest_rl.inspect_run import summarise as inspect_summary
from iquest_rl.inspect_run import to_messages
from iquest_rl.trajectory_store import iter_records
from iquest_rl.types import Outcome, RewardResult, Task, Trajectory, Turn
from sandboxes.runtimes.common import GradeResult

ROOT = Path(__file__).resolve().parents[3]
PROMPT = [{"role": "user", "content": "fix it"}]


def _task(tid: str, repo: str) -> Task:
    return Task(tid, "swe_dir", PROMPT, {"repo": repo, "patch": "gold"})


TASKS = [_task("a-1", "toy/a"), _task("b-1", "toy/b"), _task("c-1", "toy/b")]
WINS = {("a-1", 0), ("a-1", 1), ("b-1", 1)}
"""(task, sample) pairs the stand-in model resolves; c-1 is never resolved."""


class FakeStream:
    """Finishes submitted jobs in order, one per poll; outcome by WINS, INFRA for `infra` pairs."""

    def __init__(self, capacity: int = 2, interrupt_after: int | None = None, infra=()):
        self.capacity, self.interrupt_after, self.infra = capacity, interrupt_after, set(infra)
        self.pending: list = []
        self.submitted: list[tuple[str, int]] = []
        self.returned = 0

    def submit(self, job) -> None:
        self.pending.append(job)
        self.submitted.append((job.task.task_id, job.index))

    def in_flight(self) -> int:
        return len(self.pending)

    def poll(self, timeout: float) -> list[SampleResult]:
        if self.interrupt_after is not None and self.returned >= self.interrupt_after:
            raise KeyboardInterrupt
        job = self.pending.pop(0)
        self.returned += 1
        key = (job.task.task_id, job.index)
        turns = [Turn([1, 2, 3], False, text="<|im_start|>user\nfix it<|im_end|>\n<|im_start|>assistant\n"),
                 Turn([4, 5], True, [-0.1, -0.2], 0, text="<think>\nhm\n</think>\n\nok<|im_end|>")]
        log = [{"tool": "bash", "command": "pytest t.py", "exit_code": 1, "ok": False},
               {"tool": "bash", "command": "pytest -q t.py", "exit_code": 0, "ok": key in WINS}]
        traj = Trajectory(job.task.task_id, job.task.source, turns, "submit" if key != ("c-1", 1) else "length",
                          meta={"patch": f"diff {key}", "turns": 1, "num_tool_calls": 2, "thinking_tokens": 1,
                                "answer_tokens": 1, "tool_log": log, "prompt": PROMPT})
        if key in self.infra:
            return [SampleResult(job, traj, RewardResult(0.0, Outcome.INFRA_ERROR, reason="daemon died"), None)]
        outcome = Outcome.PASSED if key in WINS else Outcome.FAILED
        grade = GradeResult(outcome, int(key in WINS), 1, {"t::x": "PASSED" if key in WINS else "FAILED"},
                            "resolved" if key in WINS else "not passing", "LOG", 0.5)
        return [SampleResult(job, traj, RewardResult(float(key in WINS), outcome, reason=grade.reason), grade)]


def _eval(report: Path, stream: FakeStream, samples: int = 2) -> dict:
    return evaluate_tasks(stream, TASKS, samples, 7, AgentConfig(), SamplingConfig(), report,
                          {"family": "swe", "model": "m"})


def test_report_summary_and_store(tmp_path):
    s = _eval(tmp_path, FakeStream())
    # Instance level = sample 0 (one prediction per instance, as SWE-bench): a resolved, b and c not.
    assert s["resolved_ids"] == ["a-1"] and s["unresolved_ids"] == ["b-1", "c-1"] and s["accuracy"] == 1 / 3
    # pass@k over both samples: a 2/2, b 1/2, c 0/2.
    assert s["pass@1"] == pytest.approx((1 + 0.5 + 0) / 3) and s["pass@2"] == pytest.approx(2 / 3)
    assert s["by_repo"]["toy/b"]["pass@1"] == pytest.approx(0.25) and s["by_repo"]["toy/a"]["pass@2"] == 1.0
    assert s["samples"] == {"total": 6, "graded": 6, "infra_error": 0, "pending": 0}
    assert s["error_recovery_rate"] == pytest.approx(0.5) and s["failed_check_rate"] == 1.0
    assert s["truncated_samples"] == 1 and s["turns_mean"] == 1 and s["thinking_tokens_mean"] == 1
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    # The `eval` per-instance format, plus the samples.
    inst = json.loads((tmp_path / "b-1" / "report.json").read_text())
    assert {"instance_id", "status", "reason", "tests_passed", "tests_total", "tests", "duration_s"} <= set(inst)
    assert inst["instance_id"] == "b-1" and inst["status"] == "unresolved" and inst["num_resolved"] == 1
    assert [x["status"] for x in inst["samples"]] == ["unresolved", "resolved"]
    assert (tmp_path / "b-1" / "test_output.txt").read_text() == "LOG"
    assert (tmp_path / "b-1" / "patch.diff").read_text() == "diff ('b-1', 0)"
    # SWE-bench predictions of sample 0, the others per sample.
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert preds[0] == {"instance_id": "a-1", "model_patch": "diff ('a-1', 0)", "model_name_or_path": "m"}
    assert len(preds) == 3 and (tmp_path / "predictions_sample1.jsonl").exists()
    # The run store: inspect and export-sft read the report dir as a run dir.
    recs = list(iter_records(tmp_path))
    assert len(recs) == 6 and {(r["task_id"], r["sample"]) for r in recs} == {(t.task_id, k) for t in TASKS
                                                                              for k in (0, 1)}
    assert recs[0]["seed"] == sample_seed(7, recs[0]["task_id"], recs[0]["sample"])
    assert inspect_summary(tmp_path)["trajectories"] == 6 and to_messages(recs[0])["messages"][0] == PROMPT[0]


def test_interrupt_keeps_finished_samples_and_rerun_does_the_rest(tmp_path):
    first = FakeStream(interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        _eval(tmp_path, first)
    done = sorted(p.parent.parent.parent.name + f"/{p.parent.name}" for p in tmp_path.glob("*/samples/*/report.json"))
    assert len(done) == 4 and not list(tmp_path.glob("*/samples/.*.tmp"))
    partial = json.loads((tmp_path / "summary.json").read_text())
    assert partial["samples"]["pending"] == 2 and partial["new_samples"] == 4
    again = FakeStream()
    s = _eval(tmp_path, again)
    assert len(again.submitted) == 2 and not set(again.submitted) & set(first.submitted[:4])
    assert s["new_samples"] == 2 and s["samples"]["pending"] == 0
    full = _eval(tmp_path / "whole", FakeStream())
    assert {k: v for k, v in s.items() if k not in ("wall_s", "new_samples")} == \
        {k: v for k, v in full.items() if k not in ("wall_s", "new_samples")}
    assert _eval(tmp_path, FakeStream())["new_samples"] == 0  # nothing left to do
    # Asking for fewer samples later summarises only those (the others stay on disk).
    one = _eval(tmp_path, FakeStream(), samples=1)
    assert one["samples"] == {"total": 3, "graded": 3, "infra_error": 0, "pending": 0} and "pass@2" not in one
    assert (tmp_path / "a-1" / "samples" / "1" / "report.json").exists()


def test_infra_errors_are_counted_apart_and_run_again(tmp_path):
    s = _eval(tmp_path, FakeStream(infra={("c-1", 0), ("c-1", 1)}))
    assert s["error_ids"] == ["c-1"] and s["samples"]["infra_error"] == 2 and s["infra_errors"] == {"daemon died": 2}
    assert s["pass@1"] == pytest.approx(0.75)  # c-1 is left out of pass@k, not counted as a failure
    assert s["completed_instances"] == 2 and s["accuracy"] == 0.5
    # An infrastructure error has no reward (as `eval` reports it), never a reward of 0.
    sample = json.loads((tmp_path / "c-1" / "samples" / "0" / "report.json").read_text())
    view = json.loads((tmp_path / "c-1" / "report.json").read_text())
    assert sample["status"] == "infra_error" and sample["reward"] is None
    assert view["reward"] is None and [x["reward"] for x in view["samples"]] == [None, None]
    again = FakeStream()
    s2 = _eval(tmp_path, again)
    assert again.submitted == [("c-1", 0), ("c-1", 1)] and s2["samples"]["infra_error"] == 0
    assert s2["unresolved_ids"] == ["b-1", "c-1"]


def _args(*argv: str):
    return _parser().parse_args(list(argv))


def test_config_from_recipe_and_command_line():
    recipe = str(ROOT / "experiments/local/swe_grpo.yaml")
    args = _args("swe", "--instances", "builtin:swe_tasks", "--model", "ckpt", "--config", recipe,
                 "--max-turns", "5", "--workers", "3", "--set", "rollout.max_model_len=3072")
    cfg = resolve_config(args, TASKS)
    assert cfg.model.path == "ckpt" and cfg.model.dtype == "float32"  # the recipe's model block, our path
    assert cfg.rollout.agent.max_turns == 5 and cfg.rollout.agent.observation_max_tokens == 128
    assert cfg.rollout.sampling.temperature == 0.0 and cfg.rollout.sampling.max_tokens == 64  # greedy for 1 sample
    assert cfg.sandbox.max_concurrency == 3 and cfg.sandbox.memory_mb == 512 and cfg.rollout.max_model_len == 3072
    assert [t.name for t in cfg.reward.terms] == ["swe"] and cfg.reward.terms[0].params == {"max_penalty": 0.0}
    k4 = resolve_config(_args("swe", "--instances", "x", "--model", "m", "--config", recipe, "--samples", "4"), TASKS)
    assert k4.rollout.sampling.temperature == 1.0  # several samples: the recipe's temperature
    code = resolve_config(_args("code", "--tasks", "x", "--model", "m", "--config", recipe, "--temperature", "0.2"),
                          [Task("p", "code_tests", PROMPT)])
    assert code.rollout.agent.mode == "single_turn" and code.rollout.sampling.temperature == 0.2
    with pytest.raises(ConfigError, match="rollout.max_model_len"):
        resolve_config(_args("swe", "--instances", "x", "--model", "m", "--set", "rollout.max_model_len=1"), TASKS)


def test_test_timeout_reaches_the_graders_with_a_model():
    """--test-timeout with --model: the SWE runtime the reward worker builds bounds the test run by it
    (it was read only without --model); unset, the recipe's sandbox.test_timeout_s, else the family's 600 s."""
    from iquest_rl.actors.reward import RewardWorker

    cfg = resolve_config(_args("swe", "--instances", "x", "--model", "m", "--test-timeout", "42"), TASKS)
    assert cfg.sandbox.test_timeout_s == 42.0
    worker = RewardWorker(cfg.reward, cfg.sandbox)
    assert worker.runtimes.get("swe").test_timeout_s == 42.0
    assert resolve_config(_args("swe", "--instances", "x", "--model", "m"), TASKS).sandbox.test_timeout_s is None
    default = RewardWorker(cfg.reward, cfg.sandbox.model_copy(update={"test_timeout_s": None}))
    assert default.runtimes.get("swe").test_timeout_s == 600.0


def test_command_line_errors(tmp_path, capsys):
    from iquest_rl.evaluate import eval_main

    with pytest.raises(SystemExit):
        _args("swe", "--instances", "x", "--model", "m", "--predictions", "p.jsonl")
    assert eval_main(["terminal", "--tasks", "builtin:terminal_tasks", "--model", "m", "--report-dir",
                      str(tmp_path), "--instance-ids", "nope"]) == 2
    assert "not among the loaded tasks: nope" in capsys.readouterr().err
    # A report dir of another evaluation is not mixed into.
    (tmp_path / "eval_config.json").write_text(json.dumps({"model": "other"}))
    assert eval_main(["code", "--tasks", "builtin:code_tasks", "--model", "m", "--report-dir", str(tmp_path)]) == 2
    assert "holds samples of another evaluation" in capsys.readouterr().err


def test_sample_files_are_whole(tmp_path):
    _eval(tmp_path, FakeStream(), samples=1)
    d = tmp_path / "a-1" / "samples" / "0"
    assert sorted(p.name for p in d.iterdir()) == ["patch.diff", "report.json", "test_output.txt",
                                                   "trajectory.json.gz"]
    with gzip.open(d / "trajectory.json.gz", "rt") as f:
        rec = json.load(f)
    assert rec["reward"]["outcome"] == "passed" and rec["turns"][1]["logprobs"] == [-0.1, -0.2]


class NoisyStream(FakeStream):
    """Writes to descriptor 2 as an engine (vLLM through Ray, native code) does; `error` stops the eval."""

    def __init__(self, error: Exception | None = None):
        super().__init__()
        self.error = error

    def poll(self, timeout: float) -> list[SampleResult]:
        import os

        os.write(2, b"INFO 12-02 vllm engine noise\n")
        if self.error is not None:
            raise self.error
        return super().poll(timeout)


@pytest.mark.parametrize("error", [None, RuntimeError("reward-0 died 4 times in phase eval")])
def test_console_shows_progress_and_results_and_the_log_the_engines(tmp_path, capfd, monkeypatch, error):
    import iquest_rl.phases
    from iquest_rl.eval_model import eval_model_main

    monkeypatch.setattr(iquest_rl.phases, "SampleStream", lambda cluster, per_engine: NoisyStream(error))
    report = tmp_path / "r"
    rc = eval_model_main(_args("code", "--tasks", "builtin:code_tasks", "--limit", "2", "--model", "m",
                               "--report-dir", str(report)), cluster=object())
    out, err = capfd.readouterr()
    log = (report / "eval.log").read_text()
    assert "engine noise" in log and "engine noise" not in out + err
    assert f"engine logs: {report / 'eval.log'}" in err and "Traceback" not in out + err
    if error is None:
        assert rc == 0 and json.loads(out.splitlines()[0])["samples"]["graded"] == 2 and "sample" in err
    else:  # one line naming the error and the log; the traceback is in the log
        assert rc == 1 and f"stopped by RuntimeError: {error} (details in {report / 'eval.log'})" in err
        ours = [line for line in err.splitlines() if line.strip() and not line.startswith("eval code")]
        assert "Traceback" in log and len(ours) == 3, err  # where it writes, what stopped it, what is kept
