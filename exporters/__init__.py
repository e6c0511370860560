"""Exporters: the delta sync engine and one module per destination."""
