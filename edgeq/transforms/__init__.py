"""Model transforms applied before quantization: the Keras 3 -> tf_keras `bridge` (for QAT),
cross-layer `equalize` and SmoothQuant `smooth` (each proven to keep the float function), the
graph reading they share (`keras_config`), and the rewrites that change ops or values with
their cost measured: `substitute` (ops the target lacks), `clip` (activation clipping), both
through `rewrite` and driven by `stage`."""
