"""GPU transport hook: learner -> vLLM over NCCL through vLLM's native weight-transfer API.

Kept apart from the CPU bucket path (buckets.py) because it cannot run on the CPU machines: it needs
CUDA and a NCCL group joined by the learner's rank 0 (sender) and every rollout engine's workers.
Flow, per engine: the engine starts with `engine_kwargs()`; the learner opens the rendezvous
(`trainer_init_info`), each RolloutWorker calls `VLLMEngine.init_weight_transfer(worker_init_info(...))`;
per version, the learner broadcasts the gathered tensors while each worker runs
`VLLMEngine.receive_weights(update_info(names, dtypes, shapes), version)` (same swap protocol as the
CPU path: drain, load, reset prefix cache, bump the version). Tested only under the `gpu` marker.

NOT wired into phases.sync, which uses bucket files on GPUs too. Before wiring it: vLLM's
NCCLTrainerInitInfo defaults to packed buffers while worker_init_info sends none (the workers'
default is unpacked), vLLM's trainer_init places every engine's workers at rank_offset 1, and its
sender drives the start/update/finish calls through a client that RolloutWorker does not implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NcclRendezvous:
    """Where the learner's rank 0 listens for the weight-transfer group."""

    master_address: str
    master_port: int
    world_size: int
    """1 sender + the sum of all engines' tensor-parallel workers."""


def engine_kwargs() -> dict[str, Any]:
    """Extra vLLM engine arguments enabling the NCCL weight-transfer backend."""
    return {"weight_transfer_config": {"backend": "nccl"}}


def worker_init_info(rdv: NcclRendezvous, rank_offset: int) -> dict[str, Any]:
    """init_info for one engine; its workers take ranks rank_offset .. rank_offset + tp - 1."""
    return {"master_address": rdv.master_address, "master_port": rdv.master_port,
            "rank_offset": rank_offset, "world_size": rdv.world_size}


def update_info(names: list[str], dtypes: list[str], shapes: list[list[int]]) -> dict[str, Any]:
    """update_info for one broadcast: the tensors' names, dtype names ("bfloat16") and shapes, in send order."""
    if not (len(names) == len(dtypes) == len(shapes)):
        raise ValueError(f"nccl update_info: {len(names)} names, {len(dtypes)} dtypes, {len(shapes)} shapes")
    return {"names": list(names), "dtype_names": list(dtypes), "shapes": [list(s) for s in shapes]}


def trainer_init_info(rdv: NcclRendezvous) -> Any:
    """vLLM's sender-side init info for the learner's rank 0. The learner drives the round trip with
    `NCCLTrainerWeightTransferEngine.trainer_init(info, client=..., source=...)` (vLLM); wiring that
    client to RolloutWorker.receive_weights belongs to launch.py. Untested here (no CUDA)."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    return NCCLTrainerInitInfo(master_address=rdv.master_address, master_port=rdv.master_port,
                               world_size=rdv.world_size, rank=0)
