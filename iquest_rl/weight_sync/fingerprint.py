"""Fingerprint of served weights: a checksum of parameters that keep their checkpoint layout in vLLM.

vLLM's CPU backend repacks linear weights at load time, so they cannot be compared with the sender's
tensors. Embeddings, RMSNorm weights and the LM head are stored as loaded (embedding and LM head
padded to a multiple of 64 rows), so a checksum over them, computed the same way on the learner's
tensors and on the engine's parameters, shows whether the engine serves what was sent. The LM head is
included because with tied embeddings vLLM's CPU reload kept serving the old head (ENVIRONMENT.md).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

PROBE_SUFFIXES = ("embed_tokens.weight", "norm.weight", "lm_head.weight")
"""Parameter-name endings probed: token embeddings, every RMSNorm (input, post-attention, final), LM head."""
_PADDED = ("embed_tokens.weight", "lm_head.weight")


def is_probed(name: str) -> bool:
    return name.endswith(PROBE_SUFFIXES)


def tensor_digest(name: str, tensor: "object", vocab_size: int | None = None) -> str:
    """XXH3-128 of one probed tensor as float32 (rows beyond vocab_size dropped for padded ones).

    float32 so a bf16 learner and a bf16 engine agree byte for byte, while any change of value shows.
    XXH3 rather than sha256: it runs at memory speed, and this sits on every weight sync (twice).
    """
    import torch
    import xxhash

    t = tensor.detach()
    if vocab_size is not None and name.endswith(_PADDED):
        t = t[:vocab_size]
    t = t.to(device="cpu", dtype=torch.float32).contiguous()
    h = xxhash.xxh3_128(name.encode())
    h.update(str(tuple(t.shape)).encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def combine(digests: dict[str, str]) -> str:
    """One checksum over per-tensor digests, independent of the order they were computed in."""
    h = hashlib.sha256()
    for n in sorted(digests):
        h.update(n.encode())
        h.update(digests[n].encode())
    return h.hexdigest()


def probe_digests(named: Iterable[tuple[str, "object"]], vocab_size: int | None = None) -> dict[str, str]:
    """name -> tensor_digest for every probed tensor of `named`."""
    return {n: tensor_digest(n, t, vocab_size) for n, t in named if is_probed(n)}


def probe_checksum(named: Iterable[tuple[str, "object"]], vocab_size: int | None = None,
                   only: Iterable[str] | None = None) -> tuple[str, list[str]]:
    """(checksum, sorted names) over the probed tensors of `named`, restricted to `only` when given.

    Raises KeyError naming what is missing when `only` lists names that `named` does not have.
    """
    return restrict(probe_digests(named, vocab_size), only)


def restrict(digests: dict[str, str], only: Iterable[str] | None = None) -> tuple[str, list[str]]:
    """(checksum, sorted names) of `digests` restricted to `only` (all of them when None); KeyError
    naming what is missing when `only` lists names that `digests` does not have."""
    if only is not None:
        wanted = set(only)
        if wanted - digests.keys():
            raise KeyError(f"probe tensors not found among the served parameters: {sorted(wanted - digests.keys())[:5]}")
        digests = {n: d for n, d in digests.items() if n in wanted}
    return combine(digests), sorted(digests)


def update_checksum(checksums: Iterable[str]) -> str:
    """One digest over an update's per-bucket checksums (what was sent, independent of the engine)."""
    h = hashlib.sha256()
    for c in checksums:
        h.update(c.encode())
    return h.hexdigest()
