"""Model factories: offline tiny checkpoints and the trainable LoopCoder."""
