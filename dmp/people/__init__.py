"""People: the identity graph, profiles and tiers, lifecycle stages."""
