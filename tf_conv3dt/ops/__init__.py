"""The ``conv3d_transpose`` op: validates its arguments, plans the call and runs its lowering.

Nothing in ``tf_conv3dt.ops`` imports Keras. Kernels use the layout of ``tf.nn.conv3d_transpose``
and ``keras.layers.Conv3DTranspose``: ``(kd, kh, kw, filters, in_channels)``.

All implementations compute the same thing. Along one axis, input position
``i`` and kernel tap ``j`` write to position ``i * stride + j * dilation`` of
the *full* output; the result is the window of the full output that
``tf.nn.conv3d_transpose`` returns for the requested length (see
``shapes.crop_start``), zero beyond the end of the full output.

* ``"native"`` calls ``tf.nn.conv3d_transpose`` on NDHWC data (the CPU
  kernels support neither NCDHW nor dilation); dilation goes through a
  space-to-batch split (``dilation``), as TensorFlow's atrous convolutions
  do. Where TensorFlow's kernels compute wrong gradients it works around them
  or takes the GEMM lowering (``native``; docs/correctness.md).
* ``"gemm"`` multiplies the input voxels ``(N*D*H*W, C)`` by the kernel
  (as ``(C, kd*kh*kw*filters)`` in one matmul when kernel == stride, else
  tap by tap; a depthwise kernel by broadcast multiplies), overlap-adds the
  taps into the output by stride phase and interleaves the phases (a 3-D
  depth-to-space).
  Every intermediate has rank <= 6 and every op is a TFLite builtin, so the
  graph converts to integer-only TFLite, and autodiff through it never
  reaches the slow Conv3DBackprop* CPU kernels.
* ``"subpixel"`` computes every stride phase as a stride-1 forward
  ``tf.nn.conv3d`` of the input with that phase's taps and interleaves the
  phases like the GEMM lowering; its custom gradients are forward
  convolutions and GEMMs. Dilation goes through the same space-to-batch
  split as the native op.

``"auto"`` picks one of them per call: the measured fastest where the call's
shapes are static (``tuning``; its forward pass and its gradient may then come
from two lowerings, ``split``), else the rule (:func:`resolve_implementation`,
in ``choice``); ``plan`` holds the window every lowering computes.
"""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops.choice import (AUTO_RULE, cpu_configuration, depthwise_forced_to_gemm,
                                   forced, forced_implementation, forced_or, kernel_relation,
                                   resolve,
                                   resolve_implementation, rule_key)
from tf_conv3dt.ops.dilation import dilated_as_undilated
from tf_conv3dt.ops.gemm import gemm
from tf_conv3dt.ops.native import input_gradient_at_risk, native
from tf_conv3dt.ops.plan import Plan, make_plan
from tf_conv3dt.ops.split import with_gradient_of
from tf_conv3dt.ops.subpixel import subpixel
from tf_conv3dt.ops import choice, tuning
from tf_conv3dt.ops.tuning import autotune_enabled, set_autotune

__all__ = ["AUTO_RULE", "Plan", "autotune_enabled", "conv3d_transpose", "cpu_configuration",
           "forced_implementation", "kernel_relation", "resolve_implementation",
           "rule_key", "set_autotune"]


# Its Python branches all read static values (shapes, arguments), so AutoGraph
# would convert the whole library on each caller's first trace, and add a
# quarter of the trace time after, and change no op.
@tf.autograph.experimental.do_not_convert
def conv3d_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None,
                     dilation_rate=1, data_format="channels_last", output_shape=None,
                     implementation="auto", one_product_per_phase=False, bias=None,
                     activation=None, fake_quantize_kernel=False, groups=1):
    """Transposed 3-D convolution of ``inputs`` with ``kernel``, then ``bias`` and ``activation``.

    Args:
      inputs: 5-D floating-point tensor, ``(N, D, H, W, C)`` for
        "channels_last" or ``(N, C, D, H, W)`` for "channels_first". Batch and
        spatial sizes may be unknown until run time.
      kernel: ``(kd, kh, kw, filters // groups, C)`` tensor of the inputs' dtype.
      strides: int or 1 or 3 ints.
      padding: "valid" or "same" (case-insensitive).
      output_padding: None, or int / 1 or 3 ints, each smaller than its stride.
      dilation_rate: int or 1 or 3 ints.
      data_format: "channels_last" or "channels_first".
      output_shape: optional ``(D', H', W')`` output size, any size legal for
        this input (PyTorch's ``output_size``); overrides ``output_padding``.
      implementation: "auto" (the lowering measured fastest on this machine
        for a call whose shapes are known at trace time, see ``tuning``; else
        the rule of :func:`resolve_implementation`), "native", "gemm" or
        "subpixel"; or a pair ``(forward, gradient)`` of those three: the
        forward pass runs the first, differentiated as the second
        (``split.with_gradient_of``; what tuned "auto" runs where such a
        pair, timed together, trains faster than any one lowering).
        ``forced_implementation`` overrides both, and a call that runs
        GEMM's int8 form or GEMM's one depthwise call runs GEMM's gradient.
      one_product_per_phase: the GEMM lowering's int8-oriented form: each
        stride phase's taps summed inside one matmul (the shifted input
        windows side by side) instead of one product per tap. TensorFlow runs
        it up to 2x slower, but an int8 TFLite model then accumulates every
        output in int32 once instead of requantizing after each tap's
        addition: its largest error drops from 2-4.5% of the output range to
        about 1% for overlapping kernels. Such a call always takes the GEMM
        lowering, whatever :func:`forced_implementation` says.
      bias: None, or a ``(filters,)`` tensor added to every output.
      activation: None, or one that TFLite fuses into FULLY_CONNECTED
        (``FUSED_ACTIVATIONS``), applied after the bias. In the
        ``one_product_per_phase`` form both are applied to each phase's
        product, so that an int8 file requantizes every output once, at the
        activated output's range; elsewhere, to the output.
      fake_quantize_kernel: with ``one_product_per_phase``, for
        quantization-aware training: each product's weights on the int8 grid
        TFLite's converter gives a FULLY_CONNECTED's (symmetric, one scale
        per output channel), so that training sees the file's weights.
      groups: PyTorch's grouped transposed convolution: the input channels
        and the filters in ``groups`` equal groups, group ``i``'s inputs
        reaching only its own outputs through ``kernel[..., i * C // groups:
        (i + 1) * C // groups]`` (``groups == C`` is depthwise). The GEMM
        lowering runs a depthwise call in one call, its products broadcast
        multiplies (but in the ``one_product_per_phase`` form); every other
        grouped call runs one call of the chosen lowering per group.
        ``bias`` then has ``filters`` values.

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
    groups = shapes.check_groups(groups, kernel.shape[4])
    asked = implementation
    implementation, gradient = _forward_and_gradient(implementation)
    depthwise_gemm = groups > 1 and _depthwise_in_one_gemm(
        implementation, one_product_per_phase, kernel, groups, strides)
    if groups > 1 and not depthwise_gemm:
        return _grouped(inputs, kernel, groups, bias, dict(
            strides=strides, padding=padding, output_padding=output_padding,
            dilation_rate=dilation, data_format=data_format, output_shape=output_shape,
            implementation=asked, one_product_per_phase=one_product_per_phase,
            activation=activation, fake_quantize_kernel=fake_quantize_kernel))
    epilogue = _epilogue(bias, activation, kernel, groups)
    if fake_quantize_kernel and not one_product_per_phase:
        raise ValueError("fake_quantize_kernel=True quantizes the weights of the products "
                         "one_product_per_phase=True makes; received "
                         "one_product_per_phase=False.")
    if one_product_per_phase:  # never overridden: a quantized layer's int8 form
        if implementation not in ("auto", "gemm") or gradient not in (None, "gemm"):
            raise ValueError("one_product_per_phase=True is a form of the GEMM lowering. "
                             f"Received: implementation={asked!r}")
        implementation, gradient = "gemm", None
    elif depthwise_gemm:  # whatever lowering is forced on the other calls
        implementation, gradient = "gemm", None
    else:
        gradient = None if forced() else gradient
        implementation, one_product_per_phase = forced_or(implementation)
    requested = implementation
    implementation = resolve(implementation, kernel_size, strides, inputs.dtype)
    if gradient is not None:
        gradient = resolve(gradient, kernel_size, strides, inputs.dtype)

    x = tf.transpose(inputs, (0, 2, 3, 4, 1)) if data_format == "channels_first" else inputs
    channels = x.shape[-1]
    if channels is not None and channels != kernel.shape[4]:
        raise ValueError(
            f"The input has {channels} channels but the kernel expects "
            f"{kernel.shape[4]}. Received: inputs.shape={inputs.shape}, "
            f"kernel.shape={kernel.shape}, data_format={data_format!r}"
        )
    at_risk = input_gradient_at_risk(x.shape[1:4], strides, kernel.shape[3])
    if at_risk:  # TensorFlow's input gradient (native.py): its forward goes along
        implementation, gradient = (
            "gemm" if name == "native" else name for name in (implementation, gradient))
    plan, checks = make_plan(x, kernel_size, strides, padding, output_padding, dilation,
                             output_shape)
    if requested == "auto" and not shapes.unrolled_excess(kernel_size, strides):
        implementation, gradient = tuning.tuned(
            x, kernel, strides, padding, dilation, plan.static_output_lengths, data_format,
            [c for c in tuning.CANDIDATES if not (c == "native" and at_risk)], implementation)
    filters = kernel.shape[3] * groups
    shapes.check_output_size(plan.static_output_lengths, filters)
    if checks:
        with tf.control_dependencies(checks):
            x = tf.identity(x)

    def lowered(name, x, kernel, epilogue=None):
        """The output of lowering ``name``, and whether it applied ``epilogue``."""
        if name == "native":
            return native(x, kernel, plan, strides, padding, dilation), False
        if name == "subpixel":
            return dilated_as_undilated(subpixel, x, kernel, plan, strides, padding,
                                        dilation), False
        return gemm(x, kernel, plan, strides, dilation, one_product_per_phase, epilogue,
                    fake_quantize_kernel, groups)

    if gradient in (None, implementation):
        y, fused = lowered(implementation, x, kernel, epilogue)
    else:
        y, fused = with_gradient_of(
            lambda x, kernel, name=implementation: lowered(name, x, kernel)[0],
            lambda x, kernel, name=gradient: lowered(name, x, kernel)[0], x, kernel), False
    y.set_shape([x.shape[0], *plan.static_output_lengths, filters])
    if epilogue is not None and not fused:
        y = epilogue(y)
    return tf.transpose(y, (0, 4, 1, 2, 3)) if data_format == "channels_first" else y


def _forward_and_gradient(implementation):
    """``(forward, gradient)`` lowerings of an ``implementation`` argument: a
    name (normalized; gradient None: its own) or a pair of lowering names."""
    if isinstance(implementation, (tuple, list)):
        if len(implementation) != 2 or not all(
                isinstance(name, str) and name.lower() in shapes.LOWERINGS
                for name in implementation):
            raise ValueError(
                f"The `implementation` argument must be one of "
                f"{', '.join(map(repr, shapes.IMPLEMENTATIONS))}, or a (forward, gradient) "
                f"pair of {', '.join(map(repr, shapes.LOWERINGS))}. "
                f"Received: implementation={implementation!r}")
        return tuple(name.lower() for name in implementation)
    return shapes.normalize_choice(implementation, "implementation",
                                   shapes.IMPLEMENTATIONS), None


def _depthwise_in_one_gemm(implementation, one_product_per_phase, kernel, groups, strides):
    """Whether a grouped call runs as one call of the GEMM lowering, its
    products broadcast multiplies (``gemm.depthwise_product``): a depthwise
    call that takes GEMM: asked for, forced (as the SavedModel export's
    default does for depthwise calls: ``depthwise_as_gemm``), or by "auto"
    on a CPU, tuned or not (tuning would time one call per channel, which
    this beats). Measured
    (benchmarks/results/groups/, 32 and 64 channels, k3 s2 and k2 s2), one
    call ran forward 3-4.5x faster than one call per channel, and it was the
    fastest lowering over forward and training step together with Eigen and
    with oneDNN (AVX2 and AVX-512): 1.9-2.3x ahead of the native op where the
    rule takes that. Every other grouped call runs one call per group
    (:func:`_grouped`): batched matmuls over the groups measured 1.5-4x
    slower than that, and GEMM's int8 form keeps one FULLY_CONNECTED per
    group for the converter."""
    if one_product_per_phase or kernel.shape[4] != groups:
        return False
    implementation, one_product_per_phase = forced_or(implementation)
    if one_product_per_phase:
        return False
    if shapes.unrolled_excess(tuple(kernel.shape[:3]), strides):
        return implementation == "gemm"  # which refuses it, naming the limit
    return implementation == "gemm" or depthwise_forced_to_gemm() or (
        implementation == "auto" and not choice.on_a_gpu())


def _grouped(inputs, kernel, groups, bias, arguments):
    """``groups`` ungrouped calls, one per group of channels, concatenated.

    One call per group rather than one call with a block-diagonal kernel: its
    zeros would cost ``groups`` times the products and carry an Inf or NaN
    input of one group into every other group's outputs (0 * Inf).
    """
    axis = 1 if arguments["data_format"] == "channels_first" else 4
    if bias is not None:
        bias = _checked_bias(bias, kernel, groups)
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


# The activations TFLite fuses into FULLY_CONNECTED, by the names Keras gives them.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
_ACTIVATION_OPS = {"relu": tf.nn.relu, "relu6": tf.nn.relu6}


def _checked_bias(bias, kernel, groups):
    """``bias`` as a tensor of the kernel's dtype, one value per filter of all
    ``groups``, or a ValueError naming its shape."""
    bias = tf.convert_to_tensor(bias, dtype=kernel.dtype)
    filters = kernel.shape[3] * groups
    if bias.shape != (filters,):
        of = f" of the {groups} groups" if groups > 1 else ""
        raise ValueError(f"`bias` must have shape ({filters},), one value per filter{of}. "
                         f"Received: bias.shape={bias.shape}")
    return bias


def _epilogue(bias, activation, kernel, groups=1):
    """The elementwise function of the products that adds ``bias`` and applies
    ``activation`` (None when there is neither), for a tensor whose last axis
    holds one or more repeats of the filters of the kernel's ``groups``."""
    if activation is not None:
        activation = shapes.normalize_choice(activation, "activation", FUSED_ACTIVATIONS)
    filters = kernel.shape[3] * groups
    if bias is not None:
        bias = _checked_bias(bias, kernel, groups)
    if bias is None and activation in (None, "linear"):
        return None

    def epilogue(values):
        if bias is not None:
            repeats = values.shape[-1] // filters
            values = values + (tf.tile(bias, [repeats]) if repeats > 1 else bias)
        op = _ACTIVATION_OPS.get(activation)
        return values if op is None else op(values)

    return epilogue


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
