"""Segment membership: stored definitions, plans, previews, runs, lookup sets, live lane."""
