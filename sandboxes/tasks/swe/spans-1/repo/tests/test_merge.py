from spans.merge import merge


def test_disjoint():
    assert merge([(5, 6), (1, 2)]) == [(1, 2), (5, 6)]


def test_overlap():
    assert merge([(1, 4), (2, 6)]) == [(1, 6)]
