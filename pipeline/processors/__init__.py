"""pipecat frame processors, one per stage; each wraps one engine."""
