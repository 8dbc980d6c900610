"""tf_conv3dt: a complete, fast 3-D transposed convolution for TensorFlow and Keras."""

from tf_conv3dt.composition import layer_conv_3d_transpose
from tf_conv3dt.layer import Conv3DTranspose
from tf_conv3dt.ops import conv3d_transpose, forced_implementation

__version__ = "0.1.0"

__all__ = ["Conv3DTranspose", "conv3d_transpose", "forced_implementation",
           "layer_conv_3d_transpose"]
