"""Memorization in text models: canary exposure and training-data extraction."""
