"""Text-to-image engines (speech-to-image)."""
