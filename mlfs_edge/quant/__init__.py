"""quant (see README: architecture)."""
