"""One module per ``mlfs-edge`` sub-command (discovered by ``mlfs_edge.cli``)."""
