"""Discord voice channels: receive every member's audio (under DAVE), play interpretations.

``transport.py`` is the pipecat transport of one voice channel and ``session.py`` the
session that wires it to discord.py's voice connection (one pipeline per channel).
``receiver.py``/``hooks.py`` decode what members say; ``player.py`` is the
``AudioSource`` the bot speaks through. Import the submodules directly: this package
stays importable without discord.py installed.
"""
