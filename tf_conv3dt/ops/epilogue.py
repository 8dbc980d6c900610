"""The bias and activation after the products: checked, and as one elementwise function."""

import tensorflow as tf

from tf_conv3dt import shapes

# The activations TFLite fuses into FULLY_CONNECTED, by the names Keras gives them.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
_ACTIVATION_OPS = {"relu": tf.nn.relu, "relu6": tf.nn.relu6}


def checked_bias(bias, kernel, groups):
    """``bias`` as a tensor of the kernel's dtype, one value per filter of all
    ``groups``, or a ValueError naming its shape."""
    bias = tf.convert_to_tensor(bias, dtype=kernel.dtype)
    filters = kernel.shape[3] * groups
    if bias.shape != (filters,):
        of = f" of the {groups} groups" if groups > 1 else ""
        raise ValueError(f"`bias` must have shape ({filters},), one value per filter{of}. "
                         f"Received: bias.shape={bias.shape}")
    return bias


def epilogue(bias, activation, kernel, groups=1):
    """The elementwise function of the products that adds ``bias`` and applies
    ``activation`` (None when there is neither), for a tensor whose last axis
    holds one or more repeats of the filters of the kernel's ``groups``."""
    if activation is not None:
        activation = shapes.normalize_choice(activation, "activation", FUSED_ACTIVATIONS)
    filters = kernel.shape[3] * groups
    if bias is not None:
        bias = checked_bias(bias, kernel, groups)
    if bias is None and activation in (None, "linear"):
        return None

    def apply(values):
        if bias is not None:
            repeats = values.shape[-1] // filters
            values = values + (tf.tile(bias, [repeats]) if repeats > 1 else bias)
        op = _ACTIVATION_OPS.get(activation)
        return values if op is None else op(values)

    return apply
