import json

from iquest_rl.data.messages import validate_row
from iquest_rl.inspect_run import inspect_main, spark, summarise, to_messages
from iquest_rl.metrics import MetricsLogger
from iquest_rl.config import LoggingConfig
from iquest_rl.trajectory_store import record, write_step
from iquest_rl.types import Outcome, RewardResult, Trajectory, Turn

PROMPT = [{"role": "user", "content": "Fix the bug."}]
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}]


def _traj(reward: float, outcome=Outcome.PASSED) -> tuple[Trajectory, RewardResult]:
    turns = [
        Turn([1, 2], False, text="<|im_start|>user\nFix the bug.<|im_end|>\n<|im_start|>assistant\n"),
        Turn([3], True, [-0.1], 0, text='<think>\nlook\n</think>\n\n<tool_call>\n{"name": "bash", "arguments": {}}\n</tool_call><|im_end|>'),
        Turn([4], False, text="\n<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
        Turn([5], True, [-0.2], 0, text="Done.<|im_end|>"),
    ]
    t = Trajectory("t1", "swe", turns, "stop", meta={"prompt": PROMPT, "tools": TOOLS})
    return t, RewardResult(reward, outcome, reason="because")


def test_to_messages_round_trips_the_chat():
    t, r = _traj(1.0)
    row = to_messages(record(t, r, 1))
    assert row["messages"] == [
        PROMPT[0],
        {"role": "assistant", "content": '<think>\nlook\n</think>\n\n<tool_call>\n{"name": "bash", "arguments": {}}\n</tool_call>'},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "Done."},
    ]
    assert row["tools"] == TOOLS and validate_row(row) is None


def test_export_keeps_only_rewarded_non_infra(tmp_path, capsys):
    from iquest_rl.inspect_run import export_sft_main

    good, bad, infra = _traj(1.0), _traj(0.0, Outcome.FAILED), _traj(1.0, Outcome.INFRA_ERROR)
    write_step(tmp_path, 1, [record(*good, 1), record(*bad, 1), record(*infra, 1)])
    out = tmp_path / "sft.jsonl"
    assert export_sft_main(tmp_path, 0.5, out) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["messages"][-1]["content"] == "Done."


def test_inspect_summarises_curves_failures_and_infra(tmp_path, capsys):
    log = MetricsLogger(tmp_path, LoggingConfig(tensorboard=False, ray_metrics=False))
    for step, v in enumerate([0.1, 0.4, 0.9], 1):
        log.log(step, {"reward/mean": v})
    log.close()
    write_step(tmp_path, 1, [record(*_traj(0.0, Outcome.FAILED), 1), record(*_traj(0.0, Outcome.INFRA_ERROR), 1)])
    s = summarise(tmp_path)
    assert s["steps"] == 3 and s["curves"]["reward/mean"]["last"] == 0.9
    assert s["infra_errors"] == {"because": 1} and s["worst"][0]["reason"] == "because"
    assert inspect_main(tmp_path) == 0 and "reward/mean" in capsys.readouterr().out
    assert inspect_main(tmp_path / "nope") == 2


def test_spark_scales():
    assert spark([0, 1]) == " █" and spark([]) == ""
