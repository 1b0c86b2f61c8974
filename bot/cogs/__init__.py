"""Slash command cogs, one concern each, loaded as extensions by ``bot.discord_bot``.

``rooms``: which voice channel is interpreted, into which languages, captions.
``voice``: a member's own voice: enrollment, deletion, cloning opt-out.
"""
