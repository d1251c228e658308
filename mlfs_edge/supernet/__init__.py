"""supernet (see README: architecture)."""
