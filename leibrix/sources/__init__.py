"""Source connectors: what a table holds, read from its metadata only (never its data)."""
