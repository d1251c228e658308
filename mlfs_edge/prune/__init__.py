"""prune (see README: architecture)."""
