"""Model extraction: copy a model through its prediction API."""
