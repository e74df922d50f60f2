"""Learner -> vLLM weight transport: buckets with checksums, version stamps, fingerprint checks."""
