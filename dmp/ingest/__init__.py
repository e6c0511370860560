"""Ingest: the stream, its appender and spool, the worker that makes hits into persons."""
