import pytest

from durations.parse import parse_duration


def test_hours_seconds():
    assert parse_duration("2h5s") == 7205


def test_bad():
    with pytest.raises(ValueError):
        parse_duration("5x")
