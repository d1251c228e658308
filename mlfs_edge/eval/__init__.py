"""Task metrics, latency measurement and comparison reports."""
