"""layer_conv_3d_transpose: the Keras reference's composition function for Conv3DTranspose."""

import numpy as np
import tensorflow as tf

from tf_conv3dt._keras import keras
from tf_conv3dt.layer import Conv3DTranspose


def layer_conv_3d_transpose(object, filters, kernel_size, strides=(1, 1, 1),
                            padding="valid", data_format=None, dilation_rate=(1, 1, 1),
                            activation=None, use_bias=True,
                            kernel_initializer="glorot_uniform", bias_initializer="zeros",
                            kernel_regularizer=None, bias_regularizer=None,
                            activity_regularizer=None, kernel_constraint=None,
                            bias_constraint=None, **kwargs):
    """Composes a :class:`Conv3DTranspose` with ``object``, as the Keras reference does.

    ``object`` None returns the layer; a Sequential model gets the layer added
    and is returned; a tensor, KerasTensor or NumPy array returns the layer
    applied to it. Other arguments are those of :class:`Conv3DTranspose`
    (``**kwargs`` takes the rest: ``output_padding``, ``implementation``,
    ``name``, ...).
    """
    layer = Conv3DTranspose(
        filters, kernel_size, strides=strides, padding=padding,
        data_format=data_format, dilation_rate=dilation_rate, activation=activation,
        use_bias=use_bias, kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
        kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
    )
    if object is None:
        return layer
    if isinstance(object, keras.Sequential):
        object.add(layer)
        return object
    if isinstance(object, np.ndarray):
        object = tf.convert_to_tensor(object)
    if not (hasattr(object, "shape") and hasattr(object, "dtype")):  # tensor, KerasTensor
        raise TypeError("`object` must be None, a Sequential model, a tensor, a KerasTensor "
                        f"or a NumPy array. Received: object of type {type(object).__name__}")
    return layer(object)
