"""The native lowering: tf.nn.conv3d_transpose, around the TensorFlow kernels' wrong results."""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import cpu
from tf_conv3dt.ops.dilation import dilated_as_undilated
from tf_conv3dt.ops.lowerings import Lowering, register

# The name of the op this lowering traces, which tells the TFLite hook that a
# graph traced before conversion holds this layer's op (graph_rewrite).
OP_NAME = "tf_conv3dt_native"


class Native(Lowering):
    """``tf.nn.conv3d_transpose`` on NDHWC data (the CPU kernels support
    neither NCDHW nor dilation); dilation goes through a space-to-batch split
    (``ops.dilation``), as TensorFlow's atrous convolutions do. Its gradient
    is TensorFlow's: Conv3D and Conv3DBackpropFilter. Where TensorFlow's
    kernels compute wrong results it works around them (docs/correctness.md),
    or has the GEMM lowering run the call (:meth:`rerouted`). It runs every
    call, however many stride phases or taps."""

    name = "native"

    def forward(self, x, kernel, plan, call, epilogue=None):
        return native(x, kernel, plan, call.strides, call.padding, call.dilation), False

    def rerouted(self, call):
        """GEMM where oneDNN may compute this call's input gradient wrongly.

        The input gradient of a transposed convolution is a forward
        ``tf.nn.conv3d`` of the output gradient (``filters`` input channels)
        back to the input's spatial shape. Under oneDNN on AVX-512 CPUs that
        conv3d returns garbage (~1e10) with one input channel and an output
        length of 1 on an axis with stride > 1 (docs/correctness.md). Such
        calls, and those whose length there is unknown until run time, take
        the GEMM lowering, whose gradient is matmuls: exact, at a cost only to
        one-filter layers with a stride; its forward goes along.
        """
        if call.kernel_shape[3] != 1 or cpu.cpu_configuration() != "onednn":
            return None
        if any(s > 1 and n in (None, 1) for n, s in zip(call.input_shape[1:4], call.strides)):
            return "gemm", "oneDNN's input gradient is wrong for one filter and a length of 1"
        return None

    def memory(self, call):
        """TensorFlow's CPU kernels, from the peaks of bench_memory.py's cases
        on the AVX2-only EPYC: under Eigen about twice the output and a column
        buffer of every tap's product at once (its gradients' im2col; 2.1 and
        1.0 times those sizes fit k3 s2, k2 s2 and k4 s2 within 5%); under
        oneDNN, which keeps no such buffer, 3.6 outputs (k3 s2 and k4 s2:
        3.5 and 3.6; k2 s2: 2.5)."""
        sizes = call.sizes()
        if sizes is None:
            return None
        _, output, products = sizes
        if cpu.onednn_enabled():
            return int(3.6 * output)
        return int(2.1 * output + products)

    def untimed(self, call):
        """Not timed on a CPU without oneDNN, where the rule never takes it
        either: its Conv3DBackprop* kernels collapse on some shapes (51-58x
        the fastest lowering over forward plus training step on the
        benchmark's batch-4 case, 18-21x on (1, 16^3, 64) k4 s2), their rate
        per product varies with size, so a block of the input would misrank
        them, and timing them at the whole size cost up to 24 s a
        configuration. In the six Eigen runs kept in
        benchmarks/results/conv3d_transpose/ (nine cases each) it was the fastest in 7 of 54 cases: by 13-17% on
        (1, 64^3, 32) k3 s2 in four of six runs, by 4.6% on (1, 32^3, 64) k3
        s2 once, and by 1.5-5.5% on k1 s2 at batch 2 twice; what tuning gives
        up here for its budget."""
        if cpu.cpu_configuration() == "eigen" and not cpu.on_a_gpu():
            return "Eigen's Conv3DBackprop* kernels (no oneDNN) are not timed"
        return None

    def ranked_on_a_block(self, call):
        """Not where the kernel equals the stride.

        There its gradient (oneDNN's) runs at a rate that drops with size, and
        the block ranks it ahead of where it runs: in the six block-against-whole
        runs of 2026-12-03 (benchmarks/results/tuning_block/: oneDNN with
        AVX-512 in float32 and bfloat16, and held to AVX2), on both such cases
        of each, its gradient was 1.10-1.77x the fastest other lowering's on
        the block and 1.48-3.87x at the whole size, always further behind,
        while its forward was within 10% of the fastest on the block and 5% at
        the whole size. Where noise put it first on the block, tuning took it
        and trained 1.63-1.67x behind our fastest lowering (two benchmark runs
        of that day). It still runs as a pair's forward."""
        return call.relation != "kernel == stride"


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


register(Native())
