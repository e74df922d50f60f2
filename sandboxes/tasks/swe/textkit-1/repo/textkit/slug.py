import re


def slugify(text):
    """Lowercase `text` and join its words with single dashes."""
    text = text.strip().lower()
    text = re.sub(r"[^a-z0-9]", "-", text)
    return text.strip("-")
