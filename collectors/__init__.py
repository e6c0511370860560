"""Collectors: everything that brings data into dmp (pixel, tag, Segment-spec API)."""
