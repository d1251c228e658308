"""runtime (see README: architecture)."""
