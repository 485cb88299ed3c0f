"""Small shared helpers: atomic writes, frozen config dataclasses, safe checkpoint loading and key maps."""
