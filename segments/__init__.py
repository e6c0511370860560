"""Segments: the touchpoint matrix, scoring and the rule language (pure: frames in, frames out)."""
