"""Part images: the spatial colour encoding and its decoding into consistent labels."""
