from wordfreq.count import top_words


def test_top():
    assert top_words("b a b c b a", 2) == ["b", "a"]


def test_ties_alphabetical():
    assert top_words("y x z", 3) == ["x", "y", "z"]
