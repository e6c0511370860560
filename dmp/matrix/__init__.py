"""The touchpoint matrix: read its sources, build it, keep its snapshots."""
