"""Voice profiles: capture from first utterances, enrollment, the store, consent.

Arrives with the production-engines issue (XTTS cloning). The offline profile's
espeak-ng engine speaks in a neutral voice.
"""
