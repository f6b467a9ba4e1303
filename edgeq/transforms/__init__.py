"""Keras model rewrites applied before conversion (each checked against the float model)."""
