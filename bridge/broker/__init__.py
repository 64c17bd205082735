"""Studio scale-out: the daemon hands separation to GPU workers through Redis."""
