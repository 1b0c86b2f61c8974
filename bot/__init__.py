"""The polyvox application: command line, configuration, composition root, bots."""
