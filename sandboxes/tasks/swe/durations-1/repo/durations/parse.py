import re

_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text):
    """'1h30m' -> 5400 seconds. Units h, m, s; each may appear once, in that order."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not m or not text.strip():
        raise ValueError(f"bad duration: {text!r}")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * _UNITS["h"] + mi * _UNITS["h"] + s * _UNITS["s"]
