"""Write toy_messages.jsonl: a small, deterministic, learnable messages dataset for tests and demos.

Families (each with a fixed answer format the tiny model can learn): arithmetic, string reversal,
small Python functions, reasoning with `<think>` (as reasoning_content or inline), and a calculator
tool call followed by a tool message and the final answer.

    python -m iquest_rl.data.builtin.make_toy [OUT]   # default: next to this file
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 1234
"""Fixed seed: the shipped file is exactly what this script writes."""
COUNTS = {"arith": 90, "reverse": 60, "code": 50, "think": 60, "tool": 40}
"""Rows per family (300 in all)."""

CALC_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]},
    },
}
WORDS = ["apple", "stone", "river", "cloud", "python", "token", "model", "green", "light", "house",
         "table", "chair", "water", "paper", "music", "bread", "plant", "train", "night", "sugar"]
FUNCS = [
    ("square", "returns the square of x", "def square(x):\n    return x * x"),
    ("double", "returns twice x", "def double(x):\n    return 2 * x"),
    ("is_even", "tells whether x is even", "def is_even(x):\n    return x % 2 == 0"),
    ("add", "adds a and b", "def add(a, b):\n    return a + b"),
    ("first", "returns the first item of a list", "def first(xs):\n    return xs[0]"),
    ("last", "returns the last item of a list", "def last(xs):\n    return xs[-1]"),
    ("length", "returns the length of a string", "def length(s):\n    return len(s)"),
    ("negate", "returns minus x", "def negate(x):\n    return -x"),
    ("maximum", "returns the larger of a and b", "def maximum(a, b):\n    return a if a > b else b"),
    ("upper", "returns s in upper case", "def upper(s):\n    return s.upper()"),
]
SYSTEM = "You are a helpful coding assistant."


def arith(rng: random.Random) -> dict:
    a, b = rng.randint(1, 50), rng.randint(1, 50)
    op = rng.choice(["+", "-", "*"])
    val = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"messages": [{"role": "user", "content": f"What is {a} {op} {b}?"},
                         {"role": "assistant", "content": f"{a} {op} {b} = {val}"}]}


def reverse(rng: random.Random) -> dict:
    w = rng.choice(WORDS)
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"Reverse the string: {w}"},
                         {"role": "assistant", "content": f"The reverse of {w} is {w[::-1]}"}]}


def code(rng: random.Random) -> dict:
    name, what, body = rng.choice(FUNCS)
    return {"messages": [{"role": "user", "content": f"Write a Python function {name} that {what}."},
                         {"role": "assistant", "content": f"```python\n{body}\n```"}]}


def think(rng: random.Random) -> dict:
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    reasoning = f"First {a} + {b} = {a + b}. Then {a + b} * {c} = {(a + b) * c}."
    answer = f"The answer is {(a + b) * c}."
    question = f"Compute ({a} + {b}) * {c}."
    if rng.random() < 0.5:
        assistant = {"role": "assistant", "reasoning_content": reasoning, "content": answer}
    else:
        assistant = {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}
    return {"messages": [{"role": "user", "content": question}, assistant]}


def tool(rng: random.Random) -> dict:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    expr = f"{a} * {b}"
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expr}}}
    return {"tools": [CALC_TOOL], "messages": [
        {"role": "user", "content": f"Use the calculator to compute {expr}."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": str(a * b)},
        {"role": "assistant", "content": f"{expr} = {a * b}"},
    ]}


FAMILIES = {"arith": arith, "reverse": reverse, "code": code, "think": think, "tool": tool}


def rows(seed: int = SEED) -> list[dict]:
    """All toy rows in a seeded, interleaved order."""
    rng = random.Random(seed)
    out = [FAMILIES[name](rng) for name, n in COUNTS.items() for _ in range(n)]
    rng.shuffle(out)
    return out


def write(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows()))
    return path


if __name__ == "__main__":
    print(write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("toy_messages.jsonl")))
