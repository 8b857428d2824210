"""Test helpers shared by every layer: the only place they live."""
