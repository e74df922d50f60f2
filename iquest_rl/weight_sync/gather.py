"""Gather a ZeRO-3 model's partitioned weights bucket by bucket, under Hugging Face names, LoRA merged.

Every rank must iterate `gathered_weights` / `gathered_buckets` (each bucket is an all-gather
collective); only rank 0 receives tensors, the others get empty buckets. `export_update` writes each
gathered bucket straight into its bucket file, without an intermediate CPU copy. A bucket holds
whole parameters up to about `bucket_bytes` of full (unpartitioned) size, so peak extra memory per
rank is one bucket, not the model.

Names: DeepSpeed/compile/PEFT wrappers are stripped (`module.`, `_orig_mod.`, `base_model.model.`,
`.base_layer`), so the names are the checkpoint's own (`model.layers.0.self_attn.q_proj.weight`).
A PEFT LoRA Linear is exported as one merged weight W + Σ_adapters ΔW (PEFT's `get_delta_weight`);
its lora_A/lora_B tensors are never exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_PREFIXES = ("module.", "_orig_mod.", "base_model.model.")


def hf_name(name: str) -> str:
    """`base_model.model.model.layers.0.q_proj.base_layer.weight` -> `model.layers.0.q_proj.weight`."""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name.replace("._orig_mod.", ".").replace(".base_layer.", ".")


def full_nbytes(param: Any) -> int:
    """Bytes of the whole parameter (a ZeRO-3 partitioned one reports numel 0 locally)."""
    return int(getattr(param, "ds_numel", param.numel())) * param.element_size()


def _lora_modules(module: Any) -> dict[str, Any]:
    """name -> PEFT LoRA layer for every adapted module (a LoRA layer has base_layer and lora_A)."""
    out = {}
    for name, m in module.named_modules():
        if hasattr(m, "base_layer") and hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0:
            if getattr(m, "use_dora", {}) and any(m.use_dora.values()):
                raise NotImplementedError(f"weight export: DoRA adapter at {name} cannot be merged here")
            if not hasattr(m, "get_delta_weight"):
                raise NotImplementedError(f"weight export: LoRA layer {name} ({type(m).__name__}) has no merge rule")
            out[name] = m
    return out


def _units(module: Any) -> list[tuple[str, list[Any], Any]]:
    """(hf name, params to gather, how to build the exported tensor) in parameter order."""
    lora = _lora_modules(module)
    units = []
    for name, p in module.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name:
            continue  # merged into its base weight below
        layer_name = owner[: -len(".base_layer")] if owner.endswith(".base_layer") else None
        if layer_name in lora and leaf == "weight":
            layer = lora[layer_name]
            adapters = [a for a in layer.active_adapters if a in layer.lora_A]
            params = [p] + [w for a in adapters for w in (layer.lora_A[a].weight, layer.lora_B[a].weight)]
            units.append((hf_name(name), params, (layer, adapters)))
        else:
            units.append((hf_name(name), [p], None))
    return units


def _materialise(params: list[Any], merge: Any, copy: bool = True) -> Any:
    """The exported tensor of one unit on the CPU: the (merged) weight; copy=False may return the
    gathered parameter itself (valid only inside its GatheredParameters context)."""
    base = params[0].detach()
    if merge is None:
        return base.to("cpu", copy=copy)
    layer, adapters = merge
    w = base.clone()
    for a in adapters:
        w += layer.get_delta_weight(a).to(w.dtype)
    return w.to("cpu")


def gathered_buckets(module: Any, bucket_bytes: int, rank: int, copy: bool = True) -> Iterator[list[tuple[str, Any]]]:
    """Per bucket, while its parameters are gathered: [(hf name, full CPU tensor)] on rank 0, [] elsewhere.

    All ranks must run it to the end together (each bucket is an all-gather). With copy=False the
    tensors may be the gathered parameters themselves, valid only until the next bucket is requested:
    the consumer must use them before (the weight-sync writer writes them straight into its file).
    Parameters without ZeRO-3 partitioning (stage < 3, a plain module) are gathered as they are.
    """
    import deepspeed

    GatheredParameters = deepspeed.zero.GatheredParameters

    bucket: list[tuple[str, list[Any], Any]] = []
    size = 0

    def gathered() -> Iterator[list[tuple[str, Any]]]:
        params = [p for _, ps, _ in bucket for p in ps]
        with GatheredParameters(params, modifier_rank=None):
            yield [(n, _materialise(ps, merge, copy)) for n, ps, merge in bucket] if rank == 0 else []

    for unit in _units(module):
        bucket.append(unit)
        size += sum(full_nbytes(p) for p in unit[1])
        if size >= bucket_bytes:
            yield from gathered()
            bucket, size = [], 0
    if bucket:
        yield from gathered()


def gathered_weights(module: Any, bucket_bytes: int, rank: int) -> Iterator[tuple[str, Any]]:
    """Yield (hf name, full CPU tensor) on rank 0, each a copy; gather (and yield nothing) on other ranks.

    All ranks must run it to the end together.
    """
    for bucket in gathered_buckets(module, bucket_bytes, rank, copy=True):
        yield from bucket


def exported_names(module: Any) -> list[str]:
    """The names `gathered_weights` yields, in order (no gathering)."""
    return [n for n, _, _ in _units(module)]


def export_update(module: Any, out_dir: str, version: int, bucket_bytes: int, rank: int) -> dict[str, Any] | None:
    """Gather the weights and write them as checksummed buckets (rank 0). Collective over all ranks.

    Each gathered bucket is written straight from the gathered parameters into its bucket file (no
    intermediate CPU copy). Returns on rank 0 {"update": WeightUpdate (with its probe fingerprint),
    "nbytes": tensor bytes written}; None on the other ranks. The driver pushes "update" to every
    rollout worker and checks what they return with `check_fingerprints`.
    """
    from .buckets import BucketWriter

    writer = BucketWriter(out_dir, version) if rank == 0 else None
    for bucket in gathered_buckets(module, bucket_bytes, rank, copy=False):
        if writer is not None:
            writer.write(bucket)
    if writer is None:
        return None
    return {"update": writer.finish(), "nbytes": writer.nbytes}


def check_fingerprints(update: Any, fingerprints: list[Any]) -> None:
    """Fail loudly unless every rollout worker serves `update`: its version, the digest of its bucket
    checksums, and one served probe shared by all workers. fingerprints: what each worker's
    update_weights returned (actors.engine.Fingerprint), in worker order."""
    from .buckets import WeightSyncError
    from .fingerprint import update_checksum

    want = update_checksum(update.checksums)
    served = {fp.served for fp in fingerprints}
    for i, fp in enumerate(fingerprints):
        if fp.version != update.version or fp.update_checksum != want:
            raise WeightSyncError(
                f"rollout worker {i} serves version {fp.version} (update digest {fp.update_checksum[:12]}), "
                f"expected version {update.version} (digest {want[:12]})")
    if len(served) > 1:
        raise WeightSyncError(f"rollout workers serve different weights after version {update.version}: "
                              + ", ".join(f"worker {i}: {fp.served[:12]}" for i, fp in enumerate(fingerprints)))
