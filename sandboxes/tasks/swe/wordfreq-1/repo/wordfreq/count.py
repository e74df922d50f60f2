import re
from collections import Counter


def top_words(text, k):
    """The k most frequent words of `text` (case-insensitive), most frequent first, ties alphabetical."""
    words = re.findall(r"[A-Za-z']+", text)
    counts = Counter(words)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
