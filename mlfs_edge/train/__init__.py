"""Training: the fine-tuned teacher (stage 0) and MLFS multistage low-rank supernet training."""
