"""export (see README: architecture)."""
