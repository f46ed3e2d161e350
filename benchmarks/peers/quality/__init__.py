"""Plain PyTorch quality peers of jaxgen's cpu presets (see common.py)."""
