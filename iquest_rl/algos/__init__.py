"""Pure RL algorithm functions: advantages, policy/value losses, KL, mismatch correction, filters, batches.

Tensor functions only: no Ray, vLLM or DeepSpeed. The submodules import torch at their top, so this
package file imports none of them; workers import what they need, e.g.
`from iquest_rl.algos.losses import policy_loss`.

Token-level tensors are (batch, seq) and aligned with `input_ids`: position t holds the quantity for
token t (its logprob is predicted by the logits at t-1; see `batch.logprobs_from_logits`).
"""
