"""Tool-call parsers: well-formed calls, malformed ones as ParseErrors, and render/parse round trips."""

from __future__ import annotations

import pytest

from iquest_rl.agent.calls import ToolCall
from iquest_rl.agent.hermes import parse_hermes
from iquest_rl.agent.parsers import FORMATS, get_format
from iquest_rl.agent.qwen3_coder import parse_qwen3_coder
from iquest_rl.agent.tools import tool_schemas

TOOLS = tool_schemas()


def test_hermes_several_calls_and_content():
    text = ('Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>\n'
            '<tool_call>{"name": "str_replace_editor", "arguments": {"command": "view", "path": "a.py", '
            '"view_range": [1, 5]}}</tool_call>')
    content, calls, errors = parse_hermes(text, TOOLS)
    assert errors == []
    assert content == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [
        ("bash", {"command": "ls"}),
        ("str_replace_editor", {"command": "view", "path": "a.py", "view_range": [1, 5]}),
    ]
    assert calls[0].position < calls[1].position


def test_hermes_arguments_serialised_as_string():
    _, calls, errors = parse_hermes('<tool_call>{"name": "bash", "arguments": "{\\"command\\": \\"pwd\\"}"}</tool_call>',
                                    TOOLS)
    assert errors == [] and calls[0].arguments == {"command": "pwd"}


def test_no_tool_call_is_plain_content():
    for fmt in FORMATS.values():
        content, calls, errors = fmt.parse("The answer is 42.", TOOLS)
        assert (content, calls, errors) == ("The answer is 42.", [], [])


@pytest.mark.parametrize("body, needle", [
    ('{"name": "bash", "arguments": {"command": "ls"}', "not valid JSON"),
    ('["bash"]', 'string "name"'),
    ('{"name": "bash", "arguments": [1]}', "must be a JSON object"),
    ('{"name": "rm_rf", "arguments": {}}', "unknown tool 'rm_rf'"),
    ('{"name": "bash", "arguments": {"cmd": "ls"}}', "no parameter(s) ['cmd']"),
    ('{"name": "bash", "arguments": {}}', "missing required parameter(s) ['command']"),
    ('{"name": "bash", "arguments": {"command": "ls", "timeout": "soon"}}', "must be integer"),
    ('{"name": "str_replace_editor", "arguments": {"command": "delete", "path": "x"}}', "must be one of"),
])
def test_hermes_malformed_becomes_parse_error(body, needle):
    text = f"ok <tool_call>{body}</tool_call> then <tool_call>{{\"name\": \"submit\", \"arguments\": {{}}}}</tool_call>"
    content, calls, errors = parse_hermes(text, TOOLS)
    assert len(errors) == 1 and needle in errors[0].message, errors
    assert [c.name for c in calls] == ["submit"]  # the good call next to it survives
    assert errors[0].position < calls[0].position


def test_hermes_missing_end_tag_is_error():
    content, calls, errors = parse_hermes('Do it <tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}', TOOLS)
    assert calls == [] and len(errors) == 1 and "unterminated" in errors[0].message
    assert content == "Do it"


QWEN_TWO_CALLS = """I will inspect then edit.
<tool_call>
<function=bash>
<parameter=command>
grep -n "def add" calc.py
</parameter>
<parameter=timeout>
30
</parameter>
</function>
</tool_call>
<tool_call>
<function=str_replace_editor>
<parameter=command>
insert
</parameter>
<parameter=path>
calc.py
</parameter>
<parameter=insert_line>
2
</parameter>
<parameter=new_str>
    # fixed
    pass
</parameter>
</function>
</tool_call>"""


def test_qwen3_coder_typed_by_schema():
    content, calls, errors = parse_qwen3_coder(QWEN_TWO_CALLS, TOOLS)
    assert errors == []
    assert content == "I will inspect then edit."
    assert calls[0] == ToolCall("bash", {"command": 'grep -n "def add" calc.py', "timeout": 30}, calls[0].position)
    assert calls[1].arguments == {"command": "insert", "path": "calc.py", "insert_line": 2,
                                  "new_str": "    # fixed\n    pass"}


def test_qwen3_coder_without_schema_keeps_strings():
    _, calls, errors = parse_qwen3_coder(QWEN_TWO_CALLS, None)
    assert errors == [] and calls[0].arguments["timeout"] == "30"


@pytest.mark.parametrize("text, needle", [
    ("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</parameter>\n</function>\n", "unterminated <tool_call>"),
    ("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</parameter>\n</tool_call>", "unterminated <function="),
    ("<tool_call>\nbash ls\n</tool_call>", "holds no <function="),
    ("<tool_call>\n<function=>\n</function>\n</tool_call>", "no valid name"),
    ("<tool_call>\n<function=launch>\n</function>\n</tool_call>", "unknown tool 'launch'"),
    ("<tool_call>\n<function=bash>\n<parameter=cmd>\nls\n</parameter>\n</function>\n</tool_call>", "no parameter(s)"),
    ("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</parameter>\n<parameter=timeout>\nlater\n"
     "</parameter>\n</function>\n</tool_call>", "must be integer"),
    ("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</parameter>\n<parameter=command>\npwd\n"
     "</parameter>\n</function>\n</tool_call>", "given twice"),
])
def test_qwen3_coder_malformed_becomes_parse_error(text, needle):
    _, calls, errors = parse_qwen3_coder(text, TOOLS)
    assert calls == [] and len(errors) == 1 and needle in errors[0].message, errors


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("call", [
    ToolCall("bash", {"command": "echo 'a \"quoted\" <tag>' && ls\n", "timeout": 5}),
    ToolCall("str_replace_editor", {"command": "view", "path": "/testbed/x.py", "view_range": [3, -1]}),
    ToolCall("str_replace_editor", {"command": "create", "path": "n.py", "file_text": "x = 1\n\n", "overwrite": True}),
    ToolCall("submit", {}),
])
def test_render_then_parse_round_trips(fmt, call):
    f = get_format(fmt)
    text = "thinking done\n" + f.render(call) + "\n" + f.render(call)
    content, calls, errors = f.parse(text, TOOLS)
    assert errors == [] and content == "thinking done"
    assert [(c.name, c.arguments) for c in calls] == [(call.name, call.arguments)] * 2


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="hermes"):
        get_format("pythonic")
