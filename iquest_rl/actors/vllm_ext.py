"""vLLM worker extension: methods that run inside each vLLM worker process (via collective_rpc).

Named with an `iquest_` prefix so they never shadow a vLLM Worker method. Arguments and results are
plain dicts/lists/str: collective_rpc serialises them (tensors would arrive as lists, ENVIRONMENT.md).
Imported by vLLM in the worker by its dotted path `iquest_rl.actors.vllm_ext.WeightSyncExtension`.
"""

from __future__ import annotations

from typing import Any

EXTENSION_CLS = "iquest_rl.actors.vllm_ext.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into vLLM's Worker class; `self` is the worker (self.model_runner, self.vllm_config)."""

    def iquest_load_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Verify every bucket of `update` (a WeightUpdate as dict), then reload the weights in place.

        All buckets are read and checksummed BEFORE the first weight is touched, so a corrupted bucket
        leaves the served weights unchanged. Returns {"ok", "error", "probe", "num_tensors"}; "probe"
        covers update["probe_names"] when the sender listed them (so it compares with update["probe"]).
        """
        from iquest_rl.weight_sync.buckets import Staging, WeightSyncError, WeightUpdate, read_buckets

        wu = WeightUpdate(**update)
        only = wu.probe_names or None
        # Kept across updates: reading into already-mapped memory avoids a page fault per 4 KiB. Safe
        # because reload_weights copies into the engine's own tensors (it keeps no loaded tensor).
        if getattr(self, "_iquest_staging", None) is None:
            self._iquest_staging = Staging()
        try:
            tensors = list(read_buckets(wu, self._iquest_staging))
        except WeightSyncError as e:
            # Returned, not raised: an exception crossing collective_rpc loses its type.
            return {"ok": False, "error": str(e), "probe": self.iquest_probe(only), "num_tensors": 0}
        # CPU linear weights are repacked at load time, so model.load_weights into the running model
        # fails; reload_weights re-runs the loader's processing on the new checkpoint-format tensors.
        self.model_runner.reload_weights(weights_iterator=iter(tensors))
        return {"ok": True, "error": "", "probe": self.iquest_probe(only), "num_tensors": len(tensors)}

    def iquest_probe(self, only: list[str] | None = None) -> dict[str, Any]:
        """Checksum of the served probe parameters (embeddings, norms, LM head), comparable to the
        sender's `WeightUpdate.probe`; `only` restricts it to those names."""
        from iquest_rl.weight_sync.fingerprint import probe_checksum

        model = self.model_runner.get_model()
        vocab = self.model_runner.model_config.get_vocab_size()
        digest, names = probe_checksum(model.named_parameters(), vocab_size=vocab, only=only)
        return {"checksum": digest, "names": names}

    def iquest_param_shapes(self) -> dict[str, list[int]]:
        """Served parameter names and shapes (after any repacking), for diagnostics."""
        model = self.model_runner.get_model()
        return {n: list(p.shape) for n, p in model.named_parameters()}
