import pytest

from stacks.stack import Stack


def test_lifo():
    s = Stack()
    s.push(1)
    s.push(2)
    assert s.pop() == 2
    assert len(s) == 1


def test_peek_empty():
    with pytest.raises(IndexError):
        Stack().peek()
