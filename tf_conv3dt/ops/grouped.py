"""Groups as a wrapper around the op: one ungrouped call per group of channels."""

import tensorflow as tf

from tf_conv3dt.ops.epilogue import checked_bias


def grouped(conv3d_transpose, inputs, kernel, groups, bias, arguments):
    """``groups`` ungrouped ``conv3d_transpose`` calls, one per group of
    channels, concatenated; ``arguments``: the call's other arguments.

    One call per group rather than one call with a block-diagonal kernel: its
    zeros would cost ``groups`` times the products and carry an Inf or NaN
    input of one group into every other group's outputs (0 * Inf). A
    depthwise call that GEMM runs in one call does not come here
    (``ops.select``): batched matmuls over the groups measured 1.5-4x slower
    than one call per group, and GEMM's int8 form keeps one FULLY_CONNECTED
    per group for the converter.
    """
    axis = 1 if arguments["data_format"] == "channels_first" else 4
    if bias is not None:
        bias = checked_bias(bias, kernel, groups)
    channels = inputs.shape[axis]
    if channels is not None and channels != kernel.shape[4]:
        raise ValueError(
            f"The input has {channels} channels but the kernel expects "
            f"{kernel.shape[4]}. Received: inputs.shape={inputs.shape}, "
            f"kernel.shape={kernel.shape}, data_format={arguments['data_format']!r}")
    xs = tf.split(inputs, groups, axis=axis)
    kernels = tf.split(kernel, groups, axis=4)
    biases = [None] * groups if bias is None else tf.split(bias, groups)
    return tf.concat([conv3d_transpose(x, k, bias=b, **arguments)
                      for x, k, b in zip(xs, kernels, biases)], axis=axis)
