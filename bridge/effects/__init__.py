"""Effects, loudness and stem post-processing."""
