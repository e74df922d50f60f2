from textkit.slug import slugify


def test_simple():
    assert slugify("Hello") == "hello"


def test_two_words():
    assert slugify("Hello World") == "hello-world"
