"""Voice conversion engines (the voice changer)."""
