"""Backbones, projection heads and the EMA helper."""
