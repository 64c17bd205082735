"""Model families beyond demucs: each network, written from its published architecture."""
