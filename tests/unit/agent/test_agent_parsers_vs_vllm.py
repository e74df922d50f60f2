"""Our parsers against vLLM's own reference parsers, on the example strings from vLLM's parser tests.

Only the parser classes are imported (no engine starts). Known, deliberate difference: an output
that ends inside an unclosed <tool_call> is a ParseError for us and a call for vLLM's hermes parser.
"""

from __future__ import annotations

import json

import pytest

from iquest_rl.agent.hermes import parse_hermes
from iquest_rl.agent.qwen3_coder import parse_qwen3_coder

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string"}, "state": {"type": "string"},
    "unit": {"type": "string", "enum": ["fahrenheit", "celsius"]}}, "required": ["city", "state"]}
AREA = {"type": "object", "properties": {
    "shape": {"type": "string"}, "dimensions": {"type": "object"}, "precision": {"type": "integer"}}}
TYPES = {"type": "object", "properties": {
    "int_param": {"type": "integer"}, "float_param": {"type": "number"}, "bool_param": {"type": "boolean"},
    "str_param": {"type": "string"}, "obj_param": {"type": "object"}}}
TOOLS = [{"type": "function", "function": {"name": n, "description": n, "parameters": p}}
         for n, p in (("get_current_weather", WEATHER), ("calculate_area", AREA), ("test_types", TYPES))]


def _w(city, state):
    return (f"<tool_call>\n<function=get_current_weather>\n<parameter=city>\n{city}\n</parameter>\n"
            f"<parameter=state>\n{state}\n</parameter>\n<parameter=unit>\nfahrenheit\n</parameter>\n"
            "</function>\n</tool_call>")


QWEN_EXAMPLES = [
    _w("Dallas", "TX"),
    "Sure! Let me check the weather for you." + _w("Dallas", "TX"),
    "<tool_call>\n<function=calculate_area>\n<parameter=shape>\nrectangle\n</parameter>\n<parameter=dimensions>\n"
    '{"width": 10, \n "height": 20}\n</parameter>\n<parameter=precision>\n2\n</parameter>\n</function>\n</tool_call>',
    _w("Dallas", "TX") + "\n" + _w("Orlando", "FL"),
    "Let me calculate that area for you.<tool_call>\n<function=calculate_area>\n<parameter=shape>\ncircle\n"
    '</parameter>\n<parameter=dimensions>\n{"radius": 15.5}\n</parameter>\n<parameter=precision>\n3\n</parameter>\n'
    "</function>\n</tool_call>",
    # fallback without the <tool_call> wrapper
    "<function=get_current_weather>\n<parameter=city>\nDallas\n</parameter>\n<parameter=state>\nTX\n</parameter>\n"
    "</function>",
    "<tool_call>\n<function=test_types>\n<parameter=int_param>\n42\n</parameter>\n<parameter=float_param>\n3.14\n"
    "</parameter>\n<parameter=bool_param>\ntrue\n</parameter>\n<parameter=str_param>\nhello world\n</parameter>\n"
    '<parameter=obj_param>\n{"key": "value"}\n</parameter>\n</function>\n</tool_call>',
]

HERMES_EXAMPLES = [
    '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}\n</tool_call>',
    '<tool_call>{"name": "get_current_temperature","arguments": {"location":'
    '"San Francisco, California, United States", "unit": "celsius"}}</tool_call>',
    'Sure, let me check the weather.<tool_call>{"name": "get_weather", "arguments": {"city": "NYC"}}</tool_call>',
    '<tool_call>{"name": "search", "arguments": {"q": "cats"}}</tool_call>'
    '<tool_call>{"name": "search", "arguments": {"q": "dogs"}}</tool_call>',
    "This is not a tool call.",
]


@pytest.fixture(scope="module")
def vllm_request():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest, ChatCompletionToolsParam

    tools = [ChatCompletionToolsParam(type="function", function=t["function"]) for t in TOOLS]
    return tools, ChatCompletionRequest(model="tiny", messages=[], tools=tools)


def _vllm_calls(info):
    return [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls]


@pytest.mark.parametrize("text", QWEN_EXAMPLES)
def test_qwen3_coder_matches_vllm(text, tokenizer, vllm_request):
    from vllm.tool_parsers.qwen3_engine_tool_parser import Qwen3EngineToolParser

    tools, request = vllm_request
    ref = Qwen3EngineToolParser(tokenizer, tools=tools).extract_tool_calls(text, request)
    content, calls, errors = parse_qwen3_coder(text, TOOLS)
    assert errors == []
    assert ref.tools_called and [(c.name, c.arguments) for c in calls] == _vllm_calls(ref)
    assert content == (ref.content or "").strip()


@pytest.mark.parametrize("text", HERMES_EXAMPLES)
def test_hermes_matches_vllm(text, tokenizer, vllm_request):
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    _, request = vllm_request
    ref = Hermes2ProToolParser(tokenizer).extract_tool_calls(text, request)
    content, calls, errors = parse_hermes(text, None)
    assert errors == []
    assert [(c.name, c.arguments) for c in calls] == _vllm_calls(ref)
    # vLLM keeps only the text before the first call; ours joins all text outside calls.
    assert content == (ref.content or "").strip()


def test_hermes_invalid_json_rejected_by_both(tokenizer, vllm_request):
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    text = '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}</tool_call>'
    ref = Hermes2ProToolParser(tokenizer).extract_tool_calls(text, vllm_request[1])
    _, calls, errors = parse_hermes(text, None)
    assert not ref.tools_called and calls == [] and len(errors) == 1
