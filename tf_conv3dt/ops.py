"""3-D transposed convolution as TensorFlow ops: the native op and two lowerings.

Nothing here imports Keras. Kernels use the layout of ``tf.nn.conv3d_transpose``
and ``keras.layers.Conv3DTranspose``: ``(kd, kh, kw, filters, in_channels)``.

All implementations compute the same thing. Along one axis, input position
``i`` and kernel tap ``j`` write to position ``i * stride + j * dilation`` of
the *full* output; the result is the window of the full output that
``tf.nn.conv3d_transpose`` returns for the requested length (see
``shapes.crop_start``), zero beyond the end of the full output.

* ``"native"`` calls ``tf.nn.conv3d_transpose`` on NDHWC data (the CPU
  kernels support neither NCDHW nor dilation); dilation goes through a
  space-to-batch split, as TensorFlow's atrous convolutions do. Where
  TensorFlow's kernels compute wrong gradients (see
  ``_onednn_input_gradient_at_risk``, ``_native_same_as_valid`` and
  ``_conv3d_transpose_op``) it works around them or takes the GEMM lowering.
* ``"gemm"`` multiplies the input voxels ``(N*D*H*W, C)`` by the kernel
  (as ``(C, kd*kh*kw*filters)`` in one matmul when kernel == stride, else
  tap by tap), overlap-adds the taps into the output by stride phase and
  interleaves the phases (a 3-D depth-to-space).
  Every intermediate has rank <= 6 and every op is a TFLite builtin, so the
  graph converts to integer-only TFLite, and autodiff through it never
  reaches the slow Conv3DBackprop* CPU kernels.
* ``"subpixel"`` computes every stride phase as a stride-1 forward
  ``tf.nn.conv3d`` of the input with that phase's taps and interleaves the
  phases like the GEMM lowering; its custom gradients are forward
  convolutions and GEMMs. Dilation goes through the same space-to-batch
  split as the native op.

``"auto"`` picks one of them per call (:func:`resolve_implementation`).
"""

import contextlib
import contextvars
import functools
import itertools
import math
from typing import NamedTuple

import tensorflow as tf

from tf_conv3dt import shapes


def conv3d_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None,
                     dilation_rate=1, data_format="channels_last", output_shape=None,
                     implementation="auto", one_product_per_phase=False):
    """Transposed 3-D convolution of ``inputs`` with ``kernel`` (no bias).

    Args:
      inputs: 5-D floating-point tensor, ``(N, D, H, W, C)`` for
        "channels_last" or ``(N, C, D, H, W)`` for "channels_first". Batch and
        spatial sizes may be unknown until run time.
      kernel: ``(kd, kh, kw, filters, C)`` tensor of the inputs' dtype.
      strides, dilation_rate: int or 1 or 3 ints.
      padding: "valid" or "same" (case-insensitive).
      output_padding: None, or int / 1 or 3 ints, each smaller than its stride.
      data_format: "channels_last" or "channels_first".
      output_shape: optional ``(D', H', W')`` output size, any size legal for
        this input (PyTorch's ``output_size``); overrides ``output_padding``.
      implementation: "auto" (the fastest lowering for this kernel and
        stride on this device, see :func:`resolve_implementation`), "native",
        "gemm" or "subpixel".
      one_product_per_phase: the GEMM lowering's int8-oriented form: each
        stride phase's taps summed inside one matmul (the shifted input
        windows side by side) instead of one product per tap. TensorFlow runs
        it up to 2x slower, but an int8 TFLite model then accumulates every
        output in int32 once instead of requantizing after each tap's
        addition: its largest error drops from 2-4.5% of the output range to
        about 1% for overlapping kernels. Such a call always takes the GEMM
        lowering, whatever :func:`forced_implementation` says.

    Returns:
      5-D tensor in ``data_format`` with ``filters`` channels.

    Raises:
      TypeError: non-floating inputs, or a kernel of another dtype.
      ValueError: an argument outside its domain, or an output too large
        (``shapes.MAX_LENGTH``).
    """
    strides = shapes.normalize_tuple(strides, "strides")
    dilation = shapes.normalize_tuple(dilation_rate, "dilation_rate")
    padding = shapes.normalize_choice(padding, "padding", shapes.PADDINGS)
    data_format = shapes.normalize_choice(data_format, "data_format", shapes.DATA_FORMATS)
    if output_padding is not None:
        output_padding = shapes.normalize_tuple(output_padding, "output_padding",
                                                allow_zero=True)
    inputs = _floating_tensor(inputs)
    if isinstance(kernel, (tf.Tensor, tf.Variable)) and kernel.dtype != inputs.dtype:
        raise TypeError(
            f"`kernel` has dtype {kernel.dtype.name} and `inputs` {inputs.dtype.name}; "
            "they must match."
        )
    kernel = tf.convert_to_tensor(kernel, dtype=inputs.dtype)
    if inputs.shape.rank != 5:
        raise ValueError(
            "conv3d_transpose expects 5-D inputs (batch, 3 spatial dims, channels). "
            f"Received: inputs.shape={inputs.shape}"
        )
    if kernel.shape.rank != 5 or not kernel.shape.is_fully_defined():
        raise ValueError(
            "`kernel` must be a 5-D tensor of known shape "
            f"(kd, kh, kw, filters, in_channels). Received: kernel.shape={kernel.shape}"
        )
    kernel_size = tuple(kernel.shape[:3])
    shapes.check_conv_arguments(kernel_size, strides, padding, dilation, output_padding)
    if one_product_per_phase:  # never overridden: a quantized layer's int8 form
        if implementation not in ("auto", "gemm"):
            raise ValueError("one_product_per_phase=True is a form of the GEMM lowering. "
                             f"Received: implementation={implementation!r}")
        implementation = "gemm"
    else:
        implementation, one_product_per_phase = _forced_or(implementation)
    implementation = _resolve(implementation, kernel_size, strides)

    x = tf.transpose(inputs, (0, 2, 3, 4, 1)) if data_format == "channels_first" else inputs
    channels = x.shape[-1]
    if channels is not None and channels != kernel.shape[4]:
        raise ValueError(
            f"The input has {channels} channels but the kernel expects "
            f"{kernel.shape[4]}. Received: inputs.shape={inputs.shape}, "
            f"kernel.shape={kernel.shape}, data_format={data_format!r}"
        )
    if implementation == "native" and _onednn_input_gradient_at_risk(
            x.shape[1:4], strides, kernel.shape[3]):
        implementation = "gemm"
    plan, checks = _plan(x, kernel_size, strides, padding, output_padding, dilation,
                         output_shape)
    shapes.check_output_size(plan.static_output_lengths, kernel.shape[3])
    if checks:
        with tf.control_dependencies(checks):
            x = tf.identity(x)
    if implementation == "native":
        y = _native(x, kernel, plan, strides, padding, dilation)
    elif implementation == "subpixel":
        y = _dilated_as_undilated(_subpixel, x, kernel, plan, strides, padding, dilation)
    else:
        y = _gemm(x, kernel, plan, strides, dilation, one_product_per_phase)
    y.set_shape([x.shape[0], *plan.static_output_lengths, kernel.shape[3]])
    return tf.transpose(y, (0, 4, 1, 2, 3)) if data_format == "channels_first" else y


def _floating_tensor(inputs):
    """``inputs`` as a dense floating-point tensor, or a TypeError naming what it is."""
    if isinstance(inputs, (tf.RaggedTensor, tf.SparseTensor)):
        raise TypeError(f"`inputs` must be a dense tensor. Received: {type(inputs).__name__}")
    try:
        inputs = tf.convert_to_tensor(inputs)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`inputs` must be a floating-point tensor; it could not be "
                        f"converted: {str(error).splitlines()[0]}") from None
    if not inputs.dtype.is_floating:
        raise TypeError(
            "`inputs` must be floating-point (float16, bfloat16, float32 or float64). "
            f"Received: dtype={inputs.dtype.name}"
        )
    return inputs


# (implementation, one_product_per_phase) while forced_implementation is active.
_FORCED = contextvars.ContextVar("tf_conv3dt_forced_implementation", default=None)


@contextlib.contextmanager
def forced_implementation(implementation, one_product_per_phase=False):
    """Traces every transposed convolution in the block with ``implementation``
    (and, for "gemm", ``one_product_per_phase``, see :func:`conv3d_transpose`).

    Export uses it to put one lowering into an artifact whatever each layer
    was configured with: the GEMM lowering for TFLite (integer kernels exist
    for matmul, not for CONV_3D_TRANSPOSE) and for SavedModels that may be
    served on CPUs without oneDNN. "auto" lets each call choose again.
    """
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    token = _FORCED.set(None if implementation == "auto"
                        else (implementation, bool(one_product_per_phase)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def _forced_or(implementation):
    """The forced (implementation, one_product_per_phase), else ``(implementation, False)``."""
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    return _FORCED.get() or (implementation, False)


# What "auto" takes on a CPU: the lowering fastest over forward and training step,
# per CPU configuration and kernel/stride relation (:func:`kernel_relation`),
# as benchmarks/derive_auto_rule.py derives it from the benchmark runs kept in
# benchmarks/results/ (a test checks this table against them).
AUTO_RULE = {
    "onednn": {"kernel < stride": "native", "kernel == stride": "gemm",
               "stride 1": "native", "overlapping": "native"},
    "eigen": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
              "stride 1": "subpixel", "overlapping": "subpixel"},
}


def kernel_relation(kernel_size, strides):
    """The class of a kernel/stride pair that :data:`AUTO_RULE` is keyed by:
    "kernel < stride" on some axis (phases without taps), "kernel == stride"
    on every axis (no tap overlaps another), "stride 1" (dilated or not), or
    "overlapping" (strided, some kernel longer than its stride)."""
    if any(k < s for k, s in zip(kernel_size, strides)):
        return "kernel < stride"
    if tuple(kernel_size) == tuple(strides):
        return "kernel == stride"
    if all(s == 1 for s in strides):
        return "stride 1"
    return "overlapping"


def cpu_configuration():
    """"onednn" where TensorFlow runs its oneDNN CPU kernels (by default on
    CPUs with AVX512_VNNI/BF16 or AMX, or with TF_ENABLE_ONEDNN_OPTS=1),
    "eigen" otherwise."""
    return "onednn" if _onednn_enabled() else "eigen"


def resolve_implementation(implementation, kernel_size, strides):
    """The lowering a call with this kernel size and stride runs.

    ``forced_implementation`` wins, then an explicit choice. "auto" takes the
    native op on a GPU (cuDNN; not measured here yet) and on a CPU follows
    :data:`AUTO_RULE`, which needs only the kernel size and strides: it is
    decided at trace time whatever the batch and spatial sizes (known or not).
    Without oneDNN the native op falls back to Eigen's Conv3DBackprop*
    kernels, 30-100x slower at batch > 1, so the rule never takes it there.
    Beyond ``shapes.MAX_UNROLLED`` stride phases or kernel taps "auto" takes
    the native op, and an explicit "gemm" or "subpixel" is refused.
    """
    return _resolve(_forced_or(implementation)[0], kernel_size, strides)


def _resolve(implementation, kernel_size, strides):
    """:func:`resolve_implementation` for a normalized, already forced choice."""
    if implementation == "auto":
        if tf.config.list_logical_devices("GPU"):
            return "native"
        if shapes.unrolled_excess(kernel_size, strides):
            return "native"
        return AUTO_RULE[cpu_configuration()][kernel_relation(kernel_size, strides)]
    if implementation != "native":
        shapes.check_unrolled(kernel_size, strides, implementation)
    return implementation


def _onednn_input_gradient_at_risk(input_spatial_shape, strides, filters):
    """Whether oneDNN may compute this call's input gradient wrongly.

    The input gradient of a transposed convolution is a forward ``tf.nn.conv3d``
    of the output gradient (``filters`` input channels) back to the input's
    spatial shape. Under oneDNN on AVX-512 CPUs, TF 2.21's conv3d returned
    values around 1e10 in 3 of 300 random configurations, all of them with one
    input channel and an output length of 1 on an axis with stride > 1, e.g.
    conv3d of (3, 7, 9, 3, 1) by a (5, 4, 3, 1, 3) kernel, strides (2, 1, 2),
    "VALID", output (3, 2, 6, 1, 3): values up to 2e13, right with
    TF_ENABLE_ONEDNN_OPTS=0. oneDNN's AVX2 kernels computed all 163 random
    configurations of this family right (benchmarks/onednn_conv3d_sweep.py),
    so the rule stands on the AVX-512 measurements above. Such
    calls, and those whose length there is unknown until run time, take the
    GEMM lowering, whose gradient is matmuls: exact, at a cost only to
    one-filter layers with a stride.
    """
    if filters != 1 or not _onednn_enabled():
        return False
    return any(s > 1 and n in (None, 1) for n, s in zip(input_spatial_shape, strides))


def _onednn_enabled():
    try:  # TensorFlow's own test helper reads the same flag (test_util.IsMklEnabled).
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


class Plan(NamedTuple):
    """What one call computes, per spatial axis (3-tuples or lists).

    The GEMM and sub-pixel lowerings produce output *blocks* of ``stride``
    positions: input position ``i`` and tap ``j`` land in block
    ``i + (j * d) // s``. A call needs the window of blocks ``first_block``
    to ``n + extra_blocks`` (``n`` its input length), from which the output
    is ``output_lengths`` positions starting at ``crop_begin``.
    """

    input_lengths: list
    """Input length per axis: an int, or a scalar tensor when unknown until run time."""
    output_lengths: tuple
    """Output length per axis, an int or a scalar tensor."""
    static_output_lengths: tuple
    """``output_lengths`` where known at trace time, else None."""
    first_block: list
    """Index of the window's first block (static)."""
    extra_blocks: list
    """Blocks the window extends past the input length (static; may be negative)."""
    crop_begin: list
    """Position in the interleaved window at which the output starts."""
    window_is_output: bool
    """Whether the window is exactly the output, so no final slice is needed."""

    def blocks(self):
        """Blocks per axis in the window: ``n + extra_blocks - first_block``."""
        return [n + e - f for n, e, f in
                zip(self.input_lengths, self.extra_blocks, self.first_block)]


def _plan(x, kernel_size, strides, padding, output_padding, dilation, output_shape):
    static_in = tuple(x.shape[1:4])
    dynamic = tf.shape(x)
    sizes = [n if n is not None else dynamic[i + 1] for i, n in enumerate(static_in)]
    if output_shape is None:
        out = shapes.output_spatial_shape(sizes, kernel_size, strides, padding,
                                          output_padding, dilation)
    else:
        out = shapes.check_requested_shape(output_shape, static_in, kernel_size,
                                           strides, padding, dilation)
    static_out = tuple(o if isinstance(o, int) else None for o in out)
    first, extra, begin, whole = [], [], [], True
    for axis, (k, s, d) in enumerate(zip(kernel_size, strides, dilation)):
        n = static_in[axis]
        if n is None:
            # Unknown until run time: start at block 0 and keep one block past
            # the last tap's reach, which covers every legal output length
            # (and never needs a tap sliced); crop at run time.
            first.append(0)
            extra.append(shapes.max_block_shift(k, s, d) + 1)
            begin.append(shapes.crop_start(sizes[axis], out[axis], k, s, padding, d))
            whole = False
            continue
        length = out[axis]
        start = shapes.crop_start(n, length, k, s, padding, d)
        last_block = -(-(start + length) // s)  # ceil
        first.append(start // s)
        extra.append(last_block - n)
        begin.append(start % s)
        whole = whole and start % s == 0 and (last_block - start // s) * s == length
    checks = []
    if output_shape is not None and None in static_in:
        checks = _reachable_checks(sizes, out, kernel_size, strides, padding, dilation)
    return Plan(sizes, out, static_out, first, extra, begin, whole), checks


def _reachable_checks(sizes, out, kernel_size, strides, padding, dilation):
    """Run-time checks of a requested size against input lengths unknown at trace time."""
    checks = []
    for n, o, k, s, d in zip(sizes, out, kernel_size, strides, dilation):
        shortest, longest = shapes.output_length_range(n, k, s, padding, d)
        checks.append(tf.debugging.assert_greater_equal(
            o, shortest, message="output_shape is too small for this input"))
        checks.append(tf.debugging.assert_less_equal(
            o, longest, message="output_shape is too large for this input"))
    return checks


def _native(x, kernel, plan, strides, padding, dilation):
    if dilation != (1, 1, 1):
        return _dilated_as_undilated(_native_full, x, kernel, plan, strides, padding, dilation)
    batch = tf.shape(x)[0]
    kernel_size = tuple(kernel.shape[:3])
    if padding == "same" and any(k < s for k, s in zip(kernel_size, strides)):
        return _native_same_as_valid(x, kernel, plan, strides)
    output_shape = tf.stack([batch, *plan.output_lengths, kernel.shape[3]])
    return _conv3d_transpose_op(x, kernel, output_shape, (1, *strides, 1), padding.upper())


def _native_same_as_valid(x, kernel, plan, strides):
    """"same" with a kernel shorter than its stride on some axis, as "valid" and a crop.

    The input gradient of the op is a forward conv3d, "SAME", whose padding
    ``(n - 1) * s + k - out`` is negative here (``out`` is up to ``n * s``).
    TensorFlow 2.21's Eigen CPU kernels (TF_ENABLE_ONEDNN_OPTS=0, the default
    on CPUs without AVX-512 VNNI) then get the window wrong: 46 of 173 such
    random conv3d configurations, and none of 827 outside this rule
    (benchmarks/onednn_conv3d_sweep.py; oneDNN's AVX2 kernels got all 1,000
    right). "valid" never pads, and its output may be as long as the full
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
    output_shape = tf.stack([tf.shape(x)[0], *lengths, kernel.shape[3]])
    y = _conv3d_transpose_op(x, kernel, output_shape, (1, *strides, 1), "VALID")
    return tf.slice(y, [0, *begin, 0], [-1, *plan.output_lengths, -1])


def _dilated_as_undilated(undilated, x, kernel, plan, strides, padding, dilation):
    """Dilation (stride 1) as TensorFlow's atrous convolutions do it.

    Tap ``j`` takes input ``i`` to ``i + j * d``, which keeps ``i mod d``: each
    residue class of the input is an undilated transposed convolution of its
    own. The classes move into the batch (``_space_to_batch``), ``undilated``
    computes their full outputs and the results are interleaved back, giving
    the full output (and a little more, cut off below). A zero-dilated kernel
    would cost d**3 times the products, and its explicit zeros turn one Inf or
    NaN input into NaN on outputs the voxel never reaches (0 * Inf). Without
    dilation this is ``undilated(x, kernel, plan, strides)`` itself.
    """
    if dilation == (1, 1, 1):
        return undilated(x, kernel, plan, strides)
    kernel_size = tuple(kernel.shape[:3])
    classes = [-(-n // d) for n, d in zip(plan.input_lengths, dilation)]  # ceil(n / d) per axis
    lattice = tf.pad(x, [[0, 0]] + [[0, m * d - n] for m, n, d in
                                    zip(classes, plan.input_lengths, dilation)] + [[0, 0]])
    for axis, d in enumerate(dilation):
        lattice = _space_to_batch(lattice, axis, d)
    lattice.set_shape([None, *(m if isinstance(m, int) else None for m in classes),
                       x.shape[-1]])
    lattice_plan, _ = _plan(lattice, kernel_size, (1, 1, 1), "valid", None, (1, 1, 1), None)
    full = undilated(lattice, kernel, lattice_plan, (1, 1, 1))
    for axis, d in reversed(list(enumerate(dilation))):
        full = _batch_to_space(full, axis, d)
    begin = [shapes.crop_start(n, o, k, 1, padding, d)
             for n, o, k, d in zip(plan.input_lengths, plan.output_lengths, kernel_size, dilation)]
    return tf.slice(full, [0, *begin, 0], [-1, *plan.output_lengths, -1])


def _native_full(x, kernel, plan, strides):
    """The op's full ("valid") output for ``plan``."""
    output_shape = tf.stack([tf.shape(x)[0], *plan.output_lengths, kernel.shape[3]])
    return _conv3d_transpose_op(x, kernel, output_shape, (1, *strides, 1), "VALID")


def _space_to_batch(x, axis, d):
    """``(N, .., m * d, .., C) -> (d * N, .., m, .., C)``: position ``q * d + r``
    of spatial ``axis`` goes to batch block ``r``, position ``q``. One axis at a
    time keeps every tensor within rank 6, which TFLite transposes (its
    SPACE_TO_BATCH_ND takes no 3-D volumes)."""
    if d == 1:
        return x
    shape = tf.unstack(tf.shape(x))
    split = shape[:axis + 1] + [shape[axis + 1] // d, d] + shape[axis + 2:]
    order = [axis + 2] + [i for i in range(6) if i != axis + 2]
    moved = tf.transpose(tf.reshape(x, tf.stack(split)), order)
    return tf.reshape(moved, tf.stack([d * shape[0]] + split[1:axis + 2] + split[axis + 3:]))


def _batch_to_space(y, axis, d):
    """The inverse of :func:`_space_to_batch` for ``y``'s own lengths."""
    if d == 1:
        return y
    shape = tf.unstack(tf.shape(y))
    grouped = tf.reshape(y, tf.stack([d, shape[0] // d] + shape[1:]))
    order = [i + 1 for i in range(axis + 2)] + [0] + [i + 1 for i in range(axis + 2, 5)]
    interleaved = tf.transpose(grouped, order)
    return tf.reshape(interleaved, tf.stack(
        [shape[0] // d] + shape[1:axis + 1] + [shape[axis + 1] * d] + shape[axis + 2:]))


def _conv3d_transpose_op(x, kernel, output_shape, strides, padding):
    """``tf.nn.conv3d_transpose`` on NDHWC, with an input gradient of x's shape.

    With an empty batch, oneDNN's gradient of the op with respect to its
    input comes back with the *output's* shape, e.g. (0, 4, 4, 4, 2) for an
    input of (0, 2, 2, 2, 3) (TF 2.21; right without oneDNN): a replica that
    tf.distribute hands an empty batch then fails to all-reduce.
    :func:`_empty_batch_safe` gives it x's shape.
    """

    @tf.custom_gradient
    def input_shaped_gradient(x):
        return tf.identity(x), lambda dy: _empty_batch_safe(dy, tf.shape(x))

    return tf.nn.conv3d_transpose(input_shaped_gradient(x), kernel, output_shape,
                                  strides=strides, padding=padding, data_format="NDHWC")


def _empty_batch_safe(result, shape):
    """``result`` of an oneDNN convolution, which must have ``shape`` (1-D int
    tensor): the result itself, or an empty tensor of ``shape`` when the batch
    is empty, where oneDNN's conv3d (forward and as a gradient) may give a
    wrong shape (TF 2.21).

    A ``tf.cond``, not a reshape to ``shape``: Grappler's arithmetic optimizer
    removes a reshape whose input and target shapes it proves symbolically
    equal, which it does when only the batch is unknown at trace time (a Keras
    model's graph), and the kernel then returns the wrong shape anyway. The
    cond keeps the result whatever rewrites run. A batch known at trace time
    needs no run-time choice.
    """
    batch = tf.get_static_value(shape[0])
    if batch is not None:
        return tf.zeros(shape, result.dtype) if batch == 0 else result
    return tf.cond(tf.equal(shape[0], 0), lambda: tf.zeros(shape, result.dtype),
                   lambda: result)


def _gemm(x, kernel, plan, strides, dilation, one_product_per_phase):
    kd, kh, kw, filters, channels = kernel.shape
    kernel_size = (kd, kh, kw)
    batch = tf.shape(x)[0]
    if kernel_size == strides:
        # Each tap is its own stride phase and no tap overlaps another: one
        # matmul by the kernel as (C, kd*kh*kw*F) gives the phase tensor.
        matrix = tf.reshape(tf.transpose(kernel, (4, 0, 1, 2, 3)), (channels, -1))
        phases = tf.matmul(tf.reshape(x, (-1, channels)), matrix)
        # The channel count spelled out: -1 is ambiguous for an empty batch.
        phases = tf.reshape(phases, [batch, *plan.input_lengths, kd * kh * kw * filters])
        phases = _block_window(phases, plan, (0, 0, 0))
    else:
        phases = _overlap_add(x, kernel, batch, plan, strides, dilation,
                              one_product_per_phase)
    return _interleave_and_crop(phases, batch, plan, strides, filters)


def _overlap_add(x, kernel, batch, plan, strides, dilation, one_product_per_phase):
    """Sums the taps of each stride phase, each shifted by its block offset.

    Tap ``j`` lands at ``i * s + j * d = (i + q) * s + r`` with ``q, r =
    divmod(j * d, s)``: phase ``r``, shifted ``q`` blocks. By default each
    tap is its own ``(voxels, C) x (C, F)`` product, moved straight into the
    output's block window: one product with all taps side by side would
    materialise a tensor kd*kh*kw times the input's voxels by F and copy every
    tap out of it (2-2.5x slower here, with the memory peak to match). With
    ``one_product_per_phase`` each phase is one product of its taps' shifted
    input windows instead. Returns the phases
    concatenated on the channel axis in (rd, rh, rw) order.
    """
    kernel_size, filters, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    taps_by_phase = {}
    for offsets in itertools.product(*map(range, kernel_size)):
        placed = [divmod(j * d, s) for j, s, d in zip(offsets, strides, dilation)]
        shifts = [q for q, _ in placed]
        if _overlaps_window(plan, shifts):  # else, e.g., an outer tap cropped by "same"
            taps_by_phase.setdefault(tuple(r for _, r in placed), []).append((offsets, shifts))
    if not taps_by_phase:  # every tap misses the window on some axis
        return _unreached_zeros(x, kernel, tf.stack(
            [batch, *plan.blocks(), math.prod(strides) * filters]))
    rows = tf.reshape(x, (-1, channels))  # one row per input voxel
    phases = []
    for phase in itertools.product(*map(range, strides)):
        taps = taps_by_phase.get(phase)
        if not taps:
            phases.append(tf.zeros(tf.stack([batch, *plan.blocks(), filters]), x.dtype))
        elif one_product_per_phase:
            windows = [_block_window(x, plan, shifts) for _, shifts in taps]
            windows = tf.concat(windows, axis=-1) if len(windows) > 1 else windows[0]
            weights = tf.concat([kernel[offsets] for offsets, _ in taps], axis=1)
            product = tf.matmul(tf.reshape(windows, (-1, len(taps) * channels)), weights,
                                transpose_b=True)
            phases.append(tf.reshape(product, [batch, *plan.blocks(), filters]))
        else:
            contributions = []
            for offsets, shifts in taps:
                # kernel[offsets] is (F, C): FULLY_CONNECTED's own weight layout.
                product = tf.matmul(rows, kernel[offsets], transpose_b=True)
                product = tf.reshape(product, [batch, *plan.input_lengths, filters])
                contributions.append(_block_window(product, plan, shifts))
            # Pairwise adds, not add_n: TFLite's ADD_N has no int8 kernel.
            phases.append(functools.reduce(tf.add, contributions))
    return tf.concat(phases, axis=-1) if len(phases) > 1 else phases[0]


def _unreached_zeros(x, kernel, shape):
    """Zeros of ``shape`` for an output that no input voxel or tap reaches (a
    dilated kernel whose taps all fall outside a "same" window), with the zero
    gradients it has with respect to ``x`` and ``kernel``: computed without
    them, it would leave their gradients ``None``, and in a Keras model every
    layer before it without one."""

    @tf.custom_gradient
    def zeros(x, kernel):
        return (tf.zeros(shape, x.dtype),
                lambda dy: (tf.zeros_like(x), tf.zeros_like(kernel)))

    return zeros(x, kernel)


def _subpixel(x, kernel, plan, strides):
    """Sub-pixel form: every stride phase as a stride-1 forward convolution.

    Along one axis, output block ``b`` of phase ``r`` is ``sum_m x[b - m] *
    kernel[r + m * s]`` over the phase's ``T_r = ceil((k - r) / s)`` taps: a
    "full" correlation of the input with that phase's taps, reversed, read
    from the input padded (or cut) to the plan's window of blocks. When every
    kernel length is a multiple of its stride, all phases have the same taps
    and run as one ``tf.nn.conv3d`` with ``s1*s2*s3*F`` output channels;
    otherwise each phase is its own convolution (padding the short phases
    with zero taps would cost their products, and turn an Inf input into NaN
    where 0 * Inf lands). The phases are then interleaved as in the GEMM
    lowering. Gradients (:func:`_conv3d_valid`) are forward convolutions and
    one GEMM per tap: training never reaches the Conv3DBackprop* kernels.
    """
    kernel_size, filters, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    longest = [-(-k // s) for k, s in zip(kernel_size, strides)]
    # Block b of the window [first, n + extra) reads inputs b - T + 1 .. b.
    window = _pad_or_cut(x, [(t - 1 - f, e) for t, f, e in
                             zip(longest, plan.first_block, plan.extra_blocks)])
    if all(k % s == 0 for k, s in zip(kernel_size, strides)):
        # (kd, kh, kw, F, C) -> (T1, s1, T2, s2, T3, s3, F, C) -> (T1, T2, T3, C, s1*s2*s3*F).
        weights = tf.reshape(kernel, [longest[0], strides[0], longest[1], strides[1],
                                      longest[2], strides[2], filters, channels])
        weights = tf.transpose(weights, (0, 2, 4, 7, 1, 3, 5, 6))
        weights = tf.reverse(tf.reshape(weights, [*longest, channels, -1]), axis=[0, 1, 2])
        phases = _conv3d_valid(window, weights)
    else:
        phases = []
        for phase in itertools.product(*map(range, strides)):
            taps = [-(-(k - r) // s) for k, r, s in zip(kernel_size, phase, strides)]
            if 0 in taps:  # a kernel shorter than its stride: no tap lands here
                phases.append(tf.zeros(tf.stack([tf.shape(x)[0], *plan.blocks(), filters]),
                                       x.dtype))
                continue
            weights = kernel[phase[0]::strides[0], phase[1]::strides[1], phase[2]::strides[2]]
            weights = tf.reverse(tf.transpose(weights, (0, 1, 2, 4, 3)), axis=[0, 1, 2])
            # A phase with fewer taps starts reading T - T_r positions later.
            phases.append(_conv3d_valid(
                _pad_or_cut(window, [(t - longest_t, 0) for t, longest_t in
                                     zip(taps, longest)]), weights))
        phases = tf.concat(phases, axis=-1) if len(phases) > 1 else phases[0]
    return _interleave_and_crop(phases, tf.shape(x)[0], plan, strides, filters)


def _pad_or_cut(x, amounts):
    """Pads (positive) or cuts (negative) ``(before, after)`` positions per spatial axis."""
    if any(a < 0 for pair in amounts for a in pair):
        begin = [max(-before, 0) for before, _ in amounts]
        end = [-max(-after, 0) for _, after in amounts]
        x = tf.slice(x, [0, *begin, 0], tf.stack(
            [-1, *[tf.shape(x)[i + 1] - b + e for i, (b, e) in enumerate(zip(begin, end))],
             -1]))
    paddings = [[max(before, 0), max(after, 0)] for before, after in amounts]
    if any(p for pair in paddings for p in pair):
        x = tf.pad(x, [[0, 0], *paddings, [0, 0]])
    return x


@tf.custom_gradient
def _conv3d_valid(x, weights):
    """``tf.nn.conv3d(x, weights)``, stride 1, "VALID", with gradients that
    never call Conv3DBackprop* (Eigen's run at 2-6 GFLOP/s): the input
    gradient is the forward convolution of the padded output gradient with
    the kernel reversed and transposed, the kernel gradient one
    ``(C, voxels) x (voxels, O)`` GEMM per tap.

    With an empty batch, oneDNN's conv3d returns a wrong spatial shape (e.g.
    (0, 3, 7, 11, 2) for (0, 2, 7, 11, 2); TF 2.21): both convolutions'
    results go through :func:`_empty_batch_safe`."""
    taps = tuple(weights.shape[:3])
    channels, outputs = weights.shape[3], weights.shape[4]
    out_shape = tf.concat([tf.shape(x)[:1], tf.shape(x)[1:4] - taps + 1, [outputs]], axis=0)
    y = _empty_batch_safe(tf.nn.conv3d(x, weights, (1, 1, 1, 1, 1), "VALID"), out_shape)

    def gradient(dy):
        padded = tf.pad(dy, [[0, 0], *[[t - 1, t - 1] for t in taps], [0, 0]])
        flipped = tf.transpose(tf.reverse(weights, axis=[0, 1, 2]), (0, 1, 2, 4, 3))
        dx = _empty_batch_safe(tf.nn.conv3d(padded, flipped, (1, 1, 1, 1, 1), "VALID"),
                               tf.shape(x))
        rows = tf.reshape(dy, (-1, outputs))
        window = tf.concat([[-1], tf.shape(dy)[1:4], [-1]], axis=0)
        per_tap = []
        for offsets in itertools.product(*map(range, taps)):
            # One input window at a time: each waits for the previous tap's
            # product, so the peak holds one window, not taps of them.
            with tf.control_dependencies(per_tap[-1:]):
                columns = tf.reshape(tf.slice(x, [0, *offsets, 0], window), (-1, channels))
            per_tap.append(tf.matmul(columns, rows, transpose_a=True))
        return dx, tf.reshape(tf.stack(per_tap), weights.shape)

    return y, gradient


def _overlaps_window(plan, shifts):
    """Whether blocks [q, q + n) meet the window [first, n + extra) on every
    axis (always so for a run-time n, whose window starts at 0)."""
    return all(
        not isinstance(n, int) or (q + n > first and q < n + extra)
        for q, n, first, extra in zip(shifts, plan.input_lengths, plan.first_block,
                                      plan.extra_blocks))


def _block_window(blocks, plan, shifts):
    """Moves ``(N, n1, n2, n3, C)`` blocks, shifted by ``shifts``, into the
    plan's window of output blocks: what falls outside is sliced off, what the
    window has beyond them is zero. A tap at shift 0 inside the window is
    returned as it is, without a copy."""
    begin, cut, paddings = [], [], []
    for q, first, extra in zip(shifts, plan.first_block, plan.extra_blocks):
        # The blocks cover [q, q + n); the window is [first, n + extra).
        begin.append(max(first - q, 0))
        cut.append(max(first - q, 0) + max(q - extra, 0))
        paddings.append([max(q - first, 0), max(extra - q, 0)])
    if any(cut):
        # tf.slice, not Python slicing: StridedSlice's gradient is far slower
        # than Slice's (a Pad) on CPU.
        sizes = [-1] + [n - c for n, c in zip(plan.input_lengths, cut)] + [-1]
        blocks = tf.slice(blocks, [0, *begin, 0], sizes)
    if any(p for pair in paddings for p in pair):
        blocks = tf.pad(blocks, [[0, 0], *paddings, [0, 0]])
    return blocks


def _interleave_and_crop(phases, batch, plan, strides, filters):
    """The output: the phases interleaved, then the plan's window of them."""
    full = _interleave_phases(phases, batch, plan.blocks(), strides, filters)
    if plan.window_is_output:
        return full
    return tf.slice(full, [0, *plan.crop_begin, 0], [-1, *plan.output_lengths, -1])


def _interleave_phases(phases, batch, blocks, strides, filters):
    """3-D depth-to-space: ``(N, B1, B2, B3, s1*s2*s3*F) -> (N, B1*s1, B2*s2, B3*s3, F)``.

    One rank-6 transpose: merging N with B1 and s3 with F keeps it within
    TFLite's limits.
    """
    if strides == (1, 1, 1):
        return phases
    s1, s2, s3 = strides
    b1, b2, b3 = blocks
    grid = tf.reshape(phases, [batch * b1, b2, b3, s1, s2, s3 * filters])
    grid = tf.transpose(grid, (0, 3, 1, 4, 2, 5))
    return tf.reshape(grid, [batch, b1 * s1, b2 * s2, b3 * s3, filters])
