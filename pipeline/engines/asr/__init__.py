"""Speech-to-text engines, one module per backend (``pocketsphinx``, ...)."""
