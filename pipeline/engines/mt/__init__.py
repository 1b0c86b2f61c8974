"""Machine-translation engines (``MTEngine`` implementations)."""
