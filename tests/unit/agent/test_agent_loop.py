"""The episode loop with a scripted policy, the real tiny tokenizer and its chat template.

Checks the token-exact contract: the concatenated ids are exactly the prompts the policy saw,
the loss mask covers only sampled tokens, and each sampled token has a logprob.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iquest_rl.agent.calls import ToolCall
from iquest_rl.agent.consistency import PromptMismatchError, check_prompt_consistency, find_prompt_mismatch
from iquest_rl.agent.loop import METRIC_KEYS, NUDGE, AgentLoop
from iquest_rl.agent.parsers import get_format
from iquest_rl.agent.policy import ScriptedPolicy
from iquest_rl.config.model import ModelConfig
from iquest_rl.config.rollout import AgentConfig, SamplingConfig
from iquest_rl.types import Task

TASK = Task("calc-1", "swe", [{"role": "system", "content": "You fix bugs."},
                              {"role": "user", "content": "add() subtracts. Fix calc.py."}])
SAMPLING = SamplingConfig(temperature=1.0, max_tokens=512)


def call(fmt: str, name: str, **args) -> str:
    return get_format(fmt).render(ToolCall(name, args))


def fix_script(fmt: str) -> list[str]:
    return [
        "<think>\nFirst read the file.\n</think>\n\n" + call(fmt, "bash", command="cat calc.py"),
        "<think>\nadd uses minus.\n</think>\n\n"
        + call(fmt, "str_replace_editor", command="str_replace", path="calc.py",
               old_str="return a - b", new_str="return a + b"),
        call(fmt, "bash", command="python3 -c 'import calc; print(calc.add(2, 3))'"),
        "Fixed.\n" + call(fmt, "submit"),
    ]


def run(tokenizer, sandbox, replies, fmt="hermes", **agent_kw):
    policy = ScriptedPolicy(tokenizer, replies, policy_version=3)
    loop = AgentLoop(tokenizer, AgentConfig(**agent_kw), ModelConfig(tool_call_format=fmt))
    traj = loop.run(TASK, policy, SAMPLING, sandbox)
    return traj, policy


def assert_token_exact(traj, policy):
    ids = traj.token_ids
    for prompt in policy.prompts:
        assert ids[:len(prompt)] == prompt
    check_prompt_consistency(traj, policy.prompts)
    assert len(traj.loss_mask) == len(ids) == len(traj.rollout_logprobs)
    for turn in traj.turns:
        assert turn.sampled == (turn.logprobs is not None)
        if turn.sampled:
            assert len(turn.logprobs) == len(turn.token_ids) and turn.policy_version == 3
    assert traj.num_sampled == sum(traj.loss_mask)
    assert [lp for lp, m in zip(traj.rollout_logprobs, traj.loss_mask) if m] == [-0.5] * traj.num_sampled
    assert all(lp == 0.0 for lp, m in zip(traj.rollout_logprobs, traj.loss_mask) if not m)
    assert traj.meta["prompt_lengths"] == [len(p) for p in policy.prompts]


@pytest.mark.parametrize("fmt", ["hermes", "qwen3_coder"])
def test_scripted_fix_is_token_exact(tokenizer, sandbox, fmt):
    traj, policy = run(tokenizer, sandbox, fix_script(fmt), fmt)
    assert traj.finish_reason == "submit"
    assert Path(sandbox.workdir, "calc.py").read_text().startswith("def add(a, b):\n    return a + b")
    assert_token_exact(traj, policy)
    # prompt, then sampled/observation alternating, ending on the submit turn
    assert [t.sampled for t in traj.turns] == [False, True, False, True, False, True, False, True]
    prompt_text = tokenizer.apply_chat_template(TASK.prompt, tools=AgentLoop(
        tokenizer, AgentConfig(), ModelConfig()).tools, add_generation_prompt=True, tokenize=False)
    assert traj.turns[0].token_ids == tokenizer.encode(prompt_text, add_special_tokens=False)
    obs = [t.text for t in traj.turns[2::2]]
    assert obs[0].startswith("\n<|im_start|>user\n<tool_response>\ndef add(a, b):")
    assert all(o.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n") for o in obs)
    assert "return a + b" in obs[1] and "\n5\n</tool_response>" in obs[2]
    m = traj.meta
    assert set(METRIC_KEYS) <= set(m)
    assert (m["turns"], m["num_tool_calls"], m["malformed_calls"], m["redundant_calls"], m["noop_edits"]) == (
        4, 4, 0, 0, 0)
    think_ids = len(tokenizer.encode("<think>\nFirst read the file.\n</think>", add_special_tokens=False))
    assert m["thinking_tokens"] >= think_ids and m["answer_tokens"] > 0
    assert m["thinking_tokens"] + m["answer_tokens"] == traj.num_sampled


def test_suffix_rendering_equals_full_render(tokenizer, sandbox):
    """The appended observation deltas reproduce exactly what rendering the whole chat would give."""
    script = fix_script("hermes")
    traj, _ = run(tokenizer, sandbox, script[:3] + ["All done, no more tools."], nudge_without_tool_call=False)
    assert traj.finish_reason == "stop"
    messages = list(TASK.prompt)
    obs_turns = [t for t in traj.turns[2::2]]
    for i, reply in enumerate(script[:3]):
        _, calls, _ = get_format("hermes").parse(reply.split("</think>")[-1], None)
        think, _, _ = reply.partition("\n</think>\n\n")
        messages.append({"role": "assistant", "content": "",
                         "reasoning_content": think.removeprefix("<think>\n") if "<think>" in reply else "",
                         "tool_calls": [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                        for c in calls]})
        body = obs_turns[i].text.split("<tool_response>\n", 1)[1].rsplit("\n</tool_response>", 1)[0]
        messages.append({"role": "tool", "content": body})
    messages.append({"role": "assistant", "content": "All done, no more tools."})
    full = tokenizer.apply_chat_template(messages, tools=AgentLoop(tokenizer, AgentConfig(), ModelConfig()).tools,
                                         tokenize=False)
    assert tokenizer.decode(traj.token_ids, skip_special_tokens=False) + "\n" == full


def test_malformed_redundant_and_noop_are_counted(tokenizer, sandbox):
    replies = [
        '<tool_call>{"name": "bash", "arguments": {"command": "ls"</tool_call>'
        + call("hermes", "bash", command="ls"),
        call("hermes", "bash", command="ls")
        + call("hermes", "str_replace_editor", command="str_replace", path="calc.py",
               old_str="return a * b", new_str="return a * b")
        + '<tool_call>{"name": "deploy", "arguments": {}}</tool_call>',
        "I give up.",
    ]
    traj, policy = run(tokenizer, sandbox, replies, nudge_without_tool_call=False)
    assert_token_exact(traj, policy)
    m = traj.meta
    assert (m["num_tool_calls"], m["malformed_calls"], m["redundant_calls"], m["noop_edits"]) == (3, 2, 1, 1)
    assert traj.finish_reason == "stop"
    first_obs = traj.turns[2].text
    # the error answers the malformed call first, in the order the calls were written
    assert first_obs.index("malformed tool call: tool call is not valid JSON") < first_obs.index("calc.py")
    assert "unknown tool 'deploy'" in traj.turns[4].text


def test_submit_stops_and_skips_later_calls(tokenizer, sandbox):
    reply = call("hermes", "submit") + call("hermes", "bash", command="touch after_submit")
    traj, policy = run(tokenizer, sandbox, [reply])
    assert traj.finish_reason == "submit" and not Path(sandbox.workdir, "after_submit").exists()
    assert [t.sampled for t in traj.turns] == [False, True]


def test_max_turns_runs_last_calls_without_observation(tokenizer, sandbox):
    replies = [call("hermes", "bash", command=f"touch f{i}") for i in range(3)]
    traj, policy = run(tokenizer, sandbox, replies, max_turns=2)
    assert traj.finish_reason == "max_turns" and len(policy.prompts) == 2
    assert Path(sandbox.workdir, "f1").exists() and not Path(sandbox.workdir, "f2").exists()
    assert traj.turns[-1].sampled
    assert_token_exact(traj, policy)


def test_turn_without_tool_call_is_nudged_and_the_episode_goes_on(tokenizer, sandbox):
    replies = ["Let me think about it.", call("hermes", "bash", command="touch f1"), "Hmm.",
               "Done.\n" + call("hermes", "submit")]
    traj, policy = run(tokenizer, sandbox, replies)
    assert traj.finish_reason == "submit" and Path(sandbox.workdir, "f1").exists()
    assert_token_exact(traj, policy)
    m = traj.meta
    assert (m["turns"], m["no_call_turns"], m["num_tool_calls"], m["malformed_calls"]) == (4, 2, 2, 0)
    nudge = f"\n<|im_start|>user\n{NUDGE}<|im_end|>\n<|im_start|>assistant\n"
    assert traj.turns[2].text == nudge and traj.turns[6].text == nudge
    assert traj.turns[2].token_ids == tokenizer.encode(nudge, add_special_tokens=False)
    # The nudge is a plain user message: the appended deltas equal rendering the whole chat.
    messages = [*TASK.prompt, {"role": "assistant", "content": "Let me think about it."},
                {"role": "user", "content": NUDGE}]
    full = tokenizer.apply_chat_template(messages, tools=AgentLoop(tokenizer, AgentConfig(), ModelConfig()).tools,
                                         add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(traj.token_ids[:len(policy.prompts[1])], skip_special_tokens=False) == full


def test_nudging_stops_at_max_turns_and_can_be_turned_off(tokenizer, sandbox):
    traj, policy = run(tokenizer, sandbox, ["a", "b", "c"], max_turns=3)
    assert traj.finish_reason == "max_turns" and traj.meta["no_call_turns"] == 3
    assert [t.sampled for t in traj.turns] == [False, True, False, True, False, True]
    assert_token_exact(traj, policy)
    traj, policy = run(tokenizer, sandbox, ["a", "b"], nudge_without_tool_call=False)
    assert traj.finish_reason == "stop" and traj.meta["no_call_turns"] == 0 and len(policy.prompts) == 1
    # A cut turn still ends the episode: it may hold half a tool call.
    policy = ScriptedPolicy(tokenizer, ["word " * 50])
    traj = AgentLoop(tokenizer, AgentConfig(), ModelConfig()).run(TASK, policy, SamplingConfig(max_tokens=10), sandbox)
    assert traj.finish_reason == "length" and traj.meta["no_call_turns"] == 0


def test_max_context_and_length(tokenizer, sandbox):
    long_reply = call("hermes", "bash", command="echo " + "word " * 200)
    prompt_len = len(run(tokenizer, sandbox, ["hi"], max_turns=1)[0].turns[0].token_ids)
    traj, policy = run(tokenizer, sandbox, [long_reply], max_context_tokens=prompt_len + 100)
    assert traj.finish_reason == "max_context" and len(traj.token_ids) == prompt_len + 100
    assert traj.num_sampled == 100
    assert_token_exact(traj, policy)
    # An observation that would overflow the context ends the episode before it is appended.
    traj, policy = run(tokenizer, sandbox, [call("hermes", "bash", command="seq 1 400")],
                       max_context_tokens=prompt_len + 120, observation_max_tokens=2000)
    assert traj.finish_reason == "max_context" and traj.turns[-1].sampled
    # A turn cut by the per-turn max_tokens (context left) ends as "length".
    policy = ScriptedPolicy(tokenizer, [long_reply])
    loop = AgentLoop(tokenizer, AgentConfig(), ModelConfig())
    traj = loop.run(TASK, policy, SamplingConfig(max_tokens=20), sandbox)
    assert traj.finish_reason == "length" and traj.num_sampled == 20


def test_observation_truncation(tokenizer, sandbox):
    traj, policy = run(tokenizer, sandbox, [call("hermes", "bash", command="seq 1 2000"), "done"],
                       observation_max_tokens=64, nudge_without_tool_call=False)
    obs = traj.turns[2]
    assert traj.meta["observation_truncations"] == 1 and "tokens truncated" in obs.text
    assert obs.text.split("<tool_response>\n")[1].startswith("1\n2\n") and "\n2000\n</tool_response>" in obs.text
    assert len(obs.token_ids) < 64 + 20  # budget plus the template's few tokens


def test_wall_clock_timeout(tokenizer, sandbox, monkeypatch):
    from types import SimpleNamespace

    from iquest_rl.agent import loop as loop_module

    now = [0.0]  # the loop's clock: each generation takes 0.3 s of it, tools none
    monkeypatch.setattr(loop_module, "time", SimpleNamespace(monotonic=lambda: now[0]))

    class Slow(ScriptedPolicy):
        def generate(self, prompt_ids, sampling, max_tokens):
            now[0] += 0.3
            return super().generate(prompt_ids, sampling, max_tokens)

    policy = Slow(tokenizer, [call("hermes", "bash", command="true")] * 5)
    loop = AgentLoop(tokenizer, AgentConfig(wall_clock_s=0.5), ModelConfig())
    traj = loop.run(TASK, policy, SAMPLING, sandbox)
    assert traj.finish_reason == "timeout" and len(policy.prompts) == 2


def test_single_turn_mode(tokenizer):
    policy = ScriptedPolicy(tokenizer, ["<think>\nsum\n</think>\n\ndef f(a, b):\n    return a + b"])
    loop = AgentLoop(tokenizer, AgentConfig(mode="single_turn"), ModelConfig())
    traj = loop.run(TASK, policy, SAMPLING)
    assert traj.finish_reason == "stop" and [t.sampled for t in traj.turns] == [False, True]
    assert "# Tools" not in traj.turns[0].text
    assert traj.meta["turns"] == 1 and traj.meta["thinking_tokens"] > 0
    check_prompt_consistency(traj, policy.prompts)
    with pytest.raises(ValueError, match="need a sandbox"):
        AgentLoop(tokenizer, AgentConfig(), ModelConfig()).run(TASK, policy, SAMPLING)


def test_consistency_check_names_first_difference(tokenizer, sandbox):
    traj, policy = run(tokenizer, sandbox, fix_script("hermes"))
    seen = [list(p) for p in policy.prompts]
    seen[2][37] += 1
    msg = find_prompt_mismatch(traj, seen)
    assert msg is not None and "sampled turn 2" in msg and "token 37" in msg
    with pytest.raises(PromptMismatchError, match="token 37"):
        check_prompt_consistency(traj, seen)
    seen = [list(p) for p in policy.prompts]
    seen[1] = seen[1][:-1]  # engine saw one token fewer than the trajectory claims
    assert "first differing index" in find_prompt_mismatch(traj, seen)
    assert "prompts" in find_prompt_mismatch(traj, seen[:2])
    assert json.dumps(traj.meta)  # meta stays JSON-serialisable
