"""Model transforms applied before quantization, each proven to keep the float function:
the Keras 3 -> tf_keras `bridge` (for QAT), cross-layer `equalize`, SmoothQuant `smooth`, and
the graph reading they share (`keras_config`)."""
