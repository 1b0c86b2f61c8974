"""Audio-event classifiers (laughter, crying, sighs...)."""
