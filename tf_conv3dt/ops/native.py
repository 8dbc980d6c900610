"""The native lowering: tf.nn.conv3d_transpose, around the TensorFlow kernels' wrong results."""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import choice
from tf_conv3dt.ops.dilation import dilated_as_undilated

# The name of the op this lowering traces, which tells the TFLite hook that a
# graph traced before conversion holds this layer's op (graph_rewrite).
OP_NAME = "tf_conv3dt_native"


def input_gradient_at_risk(input_spatial_shape, strides, filters):
    """Whether oneDNN may compute this call's input gradient wrongly.

    The input gradient of a transposed convolution is a forward ``tf.nn.conv3d``
    of the output gradient (``filters`` input channels) back to the input's
    spatial shape. Under oneDNN on AVX-512 CPUs that conv3d returns garbage
    (~1e10) with one input channel and an output length of 1 on an axis with
    stride > 1 (docs/correctness.md). Such calls, and those whose length there
    is unknown until run time, take the GEMM lowering, whose gradient is
    matmuls: exact, at a cost only to one-filter layers with a stride.
    """
    if filters != 1 or choice.cpu_configuration() != "onednn":
        return False
    return any(s > 1 and n in (None, 1) for n, s in zip(input_spatial_shape, strides))


def native(x, kernel, plan, strides, padding, dilation):
    if dilation != (1, 1, 1):
        return dilated_as_undilated(_native_full, x, kernel, plan, strides, padding, dilation)
    batch = tf.shape(x)[0]
    kernel_size = tuple(kernel.shape[:3])
    if padding == "valid":
        return _valid(x, kernel, plan.input_lengths, plan.output_lengths, strides)
    if any(k < s for k, s in zip(kernel_size, strides)):
        return _native_same_as_valid(x, kernel, plan, strides)
    output_shape = tf.stack([batch, *plan.output_lengths, kernel.shape[3]])
    return _conv3d_transpose_op(x, kernel, output_shape, (1, *strides, 1), "SAME")


def _native_same_as_valid(x, kernel, plan, strides):
    """"same" with a kernel shorter than its stride on some axis, as "valid" and a crop.

    The input gradient of the op is a forward conv3d, "SAME", whose padding
    ``(n - 1) * s + k - out`` is negative here (``out`` is up to ``n * s``),
    and TensorFlow's Eigen CPU kernels then get the window wrong
    (docs/correctness.md). "valid" never pads, and its output may be as long as the full
    output plus ``s - 1``, which covers TF's "same" window. Taken on every
    device: the crop costs one copy of the output.
    """
    kernel_size = tuple(kernel.shape[:3])
    begin, lengths = [], []
    for n, out, k, s in zip(plan.input_lengths, plan.output_lengths, kernel_size, strides):
        full = shapes.full_length(n, k, s)
        start = shapes.crop_start(n, out, k, s, "same")
        begin.append(start)
        lengths.append(tf.maximum(full, start + out) if not isinstance(full, int)
                       else max(full, start + out))
    y = _valid(x, kernel, plan.input_lengths, lengths, strides)
    return tf.slice(y, [0, *begin, 0], [-1, *plan.output_lengths, -1])


def _native_full(x, kernel, plan, strides):
    """The op's "valid" output for ``plan``."""
    return _valid(x, kernel, plan.input_lengths, plan.output_lengths, strides)


def _valid(x, kernel, input_lengths, lengths, strides):
    """The op's "valid" output, ``lengths`` long per axis, as the op at the
    full length and zeros after it where a length is longer (by up to
    ``s - 1``: a kernel shorter than its stride, or ``output_padding``).

    ONNX's ConvTranspose, which tf2onnx makes of the op, cannot reach past
    the full output: tf2onnx gives it negative pads, which ONNX Runtime
    refuses. The zeros cost one copy of the output, only where they are needed.
    """
    full = [shapes.full_length(n, k, s)
            for n, k, s in zip(input_lengths, kernel.shape[:3], strides)]
    output_shape = tf.stack([tf.shape(x)[0], *full, kernel.shape[3]])
    y = _conv3d_transpose_op(x, kernel, output_shape, (1, *strides, 1), "VALID")
    after = [length - f for length, f in zip(lengths, full)]
    if all(isinstance(a, int) and a == 0 for a in after):
        return y
    return tf.pad(y, [[0, 0], *[[0, a] for a in after], [0, 0]])


def _conv3d_transpose_op(x, kernel, output_shape, strides, padding):
    """``tf.nn.conv3d_transpose`` on NDHWC, with an input gradient of x's shape.

    With an empty batch, oneDNN's gradient of the op with respect to its
    input comes back with the *output's* shape (docs/correctness.md), and a
    replica that tf.distribute hands an empty batch then fails to all-reduce:
    :func:`empty_batch_safe` gives it x's shape.
    """

    @tf.custom_gradient
    def input_shaped_gradient(x):
        return tf.identity(x), lambda dy: empty_batch_safe(dy, tf.shape(x))

    return tf.nn.conv3d_transpose(input_shaped_gradient(x), kernel, output_shape,
                                  strides=strides, padding=padding, data_format="NDHWC",
                                  name=OP_NAME)


def empty_batch_safe(result, shape):
    """``result`` of a convolution, which must have ``shape`` (1-D int
    tensor): the result itself, or an empty tensor of ``shape`` when the batch
    is empty, where oneDNN's conv3d (forward and as a gradient) may give a
    wrong shape (docs/correctness.md).

    A ``tf.cond``, not a reshape to ``shape``: Grappler's arithmetic optimizer
    removes a reshape whose input and target shapes it proves symbolically
    equal, which it does when only the batch is unknown at trace time (a Keras
    model's graph), and the kernel then returns the wrong shape anyway. The
    cond keeps the result whatever rewrites run. A batch known at trace time
    (``result``'s static shape has it) needs no run-time choice.
    """
    batch = result.shape[0]
    if batch is None:
        batch = tf.get_static_value(shape[0])  # eagerly, or a constant shape
    if batch is not None:
        return tf.zeros(shape, result.dtype) if batch == 0 else result
    return tf.cond(tf.equal(shape[0], 0), lambda: tf.zeros(shape, result.dtype),
                   lambda: result)
