"""PixelCNN family internals: causal layers, likelihood heads and the two samplers."""
