def snake_to_camel(name):
    """'parse_http_header' -> 'parseHttpHeader'."""
    head, *rest = name.split("_")
    return head + "".join(rest[:1]).capitalize() + "".join(rest[1:])
