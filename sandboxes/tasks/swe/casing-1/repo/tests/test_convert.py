from casing.convert import snake_to_camel


def test_single():
    assert snake_to_camel("name") == "name"


def test_two():
    assert snake_to_camel("first_name") == "firstName"
