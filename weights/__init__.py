"""Small models shipped with imxlate (found with importlib.resources)."""
