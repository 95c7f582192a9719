"""Adapters for the field's systems, each a script run in its own environment (bench env create NAME)
through the ReXrank contract, with its pinned requirements.txt beside it."""
