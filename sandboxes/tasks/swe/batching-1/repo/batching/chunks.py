def chunks(items, size):
    """Split `items` into lists of `size` items; the last one may be shorter."""
    if size <= 0:
        raise ValueError("size must be positive")
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items) - size + 1, size)]
