"""edgeq: Keras to verified integer TFLite models for edge devices."""

__version__ = "0.1.0"
