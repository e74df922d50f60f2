import json
from pathlib import Path


def load():
    return json.loads(Path("/app/config.json").read_text())


def test_parses():
    assert isinstance(load(), dict)


def test_values_kept():
    assert load() == {"name": "billing", "port": 8080, "debug": False, "workers": 4,
                      "hosts": ["a.internal", "b.internal"], "timeouts": {"read": 2.5, "write": 5}}
