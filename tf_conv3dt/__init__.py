"""tf_conv3dt: a complete, fast 3-D transposed convolution for TensorFlow and Keras."""

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.composition import layer_conv_3d_transpose
from tf_conv3dt.layer import Conv3DTranspose, kernel_from_torch, kernel_to_torch
from tf_conv3dt.ops import conv3d_transpose, forced_implementation
from tf_conv3dt import initializers, tflite_hook

__version__ = "0.1.0"

tflite_hook.install()

# keras: the Keras the layer is built on (Keras 3, or tf_keras when
# LEGACY_KERAS, that is TF_USE_LEGACY_KERAS=1), for models that mix it in.
__all__ = ["Conv3DTranspose", "LEGACY_KERAS", "conv3d_transpose", "forced_implementation",
           "initializers", "kernel_from_torch", "kernel_to_torch", "keras",
           "layer_conv_3d_transpose"]
