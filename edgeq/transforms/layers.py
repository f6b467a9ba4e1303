"""edgeq's own Keras 3 layers and activations that rewrites put into a model.

Each computes what the layer it replaces computes, in ops that the integer kernels of the
targets have (why each exists is said where it is defined). They are built only inside edgeq's
rewrites (edgeq.transforms.rewrite), never loaded from a file.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_SIGMOID_K = 1.702  # Hendrycks & Gimpel 2016, sec. 2: GELU(x) ~ x * sigmoid(1.702 x)


def layer_norm_class() -> type:
    import keras
    from keras import ops

    class DecomposedLayerNorm(keras.layers.Layer):
        """LayerNormalization over the last axis written as MEAN, SUB, MUL, RSQRT, ADD.

        Keras lowers LayerNormalization through tf.nn.moments, whose variance is
        SQUARED_DIFFERENCE in TFLite; LiteRT's SQUARED_DIFFERENCE kernel has no int16 version
        ("SquaredDifference only supports FLOAT32 and INT32 now, got 7", LiteRT 2.21), so a
        16x8 model of a LayerNorm network cannot run. (x - mean) * (x - mean) is a MUL, which
        has 16x8 kernels, as MEAN, SUB, RSQRT and ADD do.
        """

        def __init__(self, *, epsilon: float, center: bool, scale: bool, **kwargs: Any):
            super().__init__(**kwargs)
            self.epsilon, self.center, self.scale = float(epsilon), bool(center), bool(scale)

        def build(self, input_shape: Any) -> None:
            shape = (int(input_shape[-1]),)
            self.gamma = self.add_weight(shape=shape, name="gamma") if self.scale else None
            self.beta = self.add_weight(shape=shape, name="beta") if self.center else None

        def call(self, x: Any) -> Any:
            d = x - ops.mean(x, axis=-1, keepdims=True)
            y = d * ops.rsqrt(ops.mean(d * d, axis=-1, keepdims=True) + self.epsilon)
            if self.gamma is not None:
                y = y * self.gamma
            if self.beta is not None:
                y = y + self.beta
            return y

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict:
            return {**super().get_config(), "epsilon": self.epsilon, "center": self.center,
                    "scale": self.scale}

    return DecomposedLayerNorm


def gelu_sigmoid(x: Any) -> Any:
    """x * sigmoid(1.702 x): MUL and LOGISTIC, which TFLite Micro has (it has no GELU)."""
    from keras import ops

    return x * ops.sigmoid(GELU_SIGMOID_K * x)


def gelu_tanh(x: Any) -> Any:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): MUL, ADD and TANH."""
    from keras import ops

    return 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


gelu_sigmoid.edgeq_name = "gelu~x*sigmoid(1.702x)"  # type: ignore[attr-defined]
gelu_tanh.edgeq_name = "gelu~tanh"  # type: ignore[attr-defined]


def clipped(activation: Callable[[Any], Any], lo: float, hi: float) -> Callable[[Any], Any]:
    """activation(x) limited to [lo, hi] (MAXIMUM/MINIMUM, or RELU_N1_TO_1/RELU6-like fusions):
    the GELU10 recipe's bound (Kim et al. / the background's table) as a model op, so the float
    model verified is the clipped one."""
    from keras import ops

    def fn(x: Any) -> Any:
        return ops.clip(activation(x), lo, hi)

    fn.edgeq_name = f"clip({getattr(activation, 'edgeq_name', activation.__name__)}, {lo:.4g}, {hi:.4g})"  # type: ignore[attr-defined]
    return fn


def scaled_add_class() -> type:
    import keras
    from keras import ops

    class ScaledAdd(keras.layers.Layer):
        """keras.layers.Add whose i-th input is first multiplied per channel by scales[i].

        SmoothQuant on a post-LN (BERT-order) block divides the LayerNorm's output by s for
        the Dense layers that read it; the residual Add that also reads it gets s back here,
        one MUL by a constant, so the block computes what it did."""

        def __init__(self, scales: dict[int, Any], **kwargs: Any):
            super().__init__(**kwargs)
            self._scales = {int(i): np.asarray(s, np.float32) for i, s in scales.items()}

        def call(self, inputs: Any) -> Any:
            out = None
            for i, x in enumerate(inputs):
                if i in self._scales:
                    x = x * ops.convert_to_tensor(self._scales[i])
                out = x if out is None else out + x
            return out

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape[0]

        def get_config(self) -> dict:
            return {**super().get_config(),
                    "scales": {str(i): s.tolist() for i, s in self._scales.items()}}

    return ScaledAdd
