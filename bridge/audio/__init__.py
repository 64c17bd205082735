"""Audio in and out: probing, decoding, resampling, formats and stem files."""
