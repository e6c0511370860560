"""Storage: Redis key names, the embedded Redis server, locks, bulk replies, Parquet files."""
