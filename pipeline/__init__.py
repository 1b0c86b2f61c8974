"""The interpretation cascade: frames, processors, engines and the pipeline builder."""
