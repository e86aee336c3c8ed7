"""Example agents; the embedded default configuration serves ``examples.research``."""
