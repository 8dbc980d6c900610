"""The ``conv3d_transpose`` op: checks its arguments, selects its lowerings and runs them.

Nothing in ``tf_conv3dt.ops`` imports Keras. Kernels use the layout of ``tf.nn.conv3d_transpose``
and ``keras.layers.Conv3DTranspose``: ``(kd, kh, kw, filters, in_channels)``.

All lowerings compute the same thing. Along one axis, input position ``i``
and kernel tap ``j`` write to position ``i * stride + j * dilation`` of the
*full* output; the result is the window of the full output that
``tf.nn.conv3d_transpose`` returns for the requested length (see
``shapes.crop_start``), zero beyond the end of the full output.

A call becomes a lowering in four steps, each in a module of its own:
``call`` records it, ``select`` says which lowering runs its forward pass
and which its gradient, and why (forced, explicit, rerouted around
TensorFlow's wrong kernels, measured by ``tuning``, or the static ``rule``),
``plan`` computes the window every lowering shares, and the lowering runs
(``lowerings``: native, gemm, gemm_int8, subpixel; ``split`` where the
gradient is another's). ``grouped`` wraps it all for grouped calls.
"""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops.budget import memory_budget, set_memory_budget
from tf_conv3dt.ops.call import Call
from tf_conv3dt.ops.cpu import cpu_configuration
from tf_conv3dt.ops.epilogue import FUSED_ACTIVATIONS, epilogue
from tf_conv3dt.ops.grouped import grouped
from tf_conv3dt.ops.lowerings import gemm_int8
from tf_conv3dt.ops.plan import Plan, make_plan
from tf_conv3dt.ops.rule import AUTO_RULE, kernel_relation, rule_key
from tf_conv3dt.ops import select
from tf_conv3dt.ops.select import forced_implementation, normalised, resolve_implementation
from tf_conv3dt.ops.split import with_gradient_of
from tf_conv3dt.ops.tuning import autotune_enabled, set_autotune

__all__ = ["AUTO_RULE", "FUSED_ACTIVATIONS", "Plan", "autotune_enabled", "conv3d_transpose", "cpu_configuration",
           "forced_implementation", "kernel_relation", "memory_budget", "resolve_implementation",
           "rule_key", "set_autotune", "set_memory_budget"]


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
        the rule of :func:`resolve_implementation`), a registered lowering's
        name ("native", "gemm", "gemm_int8", "subpixel"; ``ops.lowerings``)
        or a ``Lowering``; or a pair ``(forward, gradient)`` of names: the
        forward pass runs the first, differentiated as the second
        (``split.with_gradient_of``; what tuned "auto" runs where such a
        pair, timed together, trains faster than any one lowering).
        ``forced_implementation`` overrides it, but for a lowering that keeps
        its calls ("gemm_int8"); ``ops.select`` says which runs, and why.
      one_product_per_phase: deprecated: ``implementation="gemm_int8"``.
      bias: None, or a ``(filters,)`` tensor added to every output.
      activation: None, or one that TFLite fuses into FULLY_CONNECTED
        (:data:`FUSED_ACTIVATIONS`), applied after the bias: by "gemm_int8"
        to each phase's product, so that an int8 file requantizes every
        output once, at the activated output's range; elsewhere, to the
        output.
      fake_quantize_kernel: deprecated: ``implementation=
        ops.lowerings.gemm_int8.ON_THE_INT8_GRID``, "gemm_int8" with each
        product's weights on the int8 grid, for quantization-aware training.
      groups: PyTorch's grouped transposed convolution: the input channels
        and the filters in ``groups`` equal groups, group ``i``'s inputs
        reaching only its own outputs through ``kernel[..., i * C // groups:
        (i + 1) * C // groups]`` (``groups == C`` is depthwise). The GEMM
        lowering runs a depthwise call in one call, its products broadcast
        multiplies; every other grouped call runs one call of the chosen
        lowering per group. ``bias`` then has ``filters`` values.

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
    inputs, kernel = _checked_tensors(inputs, kernel)
    kernel_size = tuple(kernel.shape[:3])
    shapes.check_conv_arguments(kernel_size, strides, padding, dilation, output_padding)
    groups = shapes.check_groups(groups, kernel.shape[4])
    asked = implementation
    implementation = gemm_int8.from_flags(normalised(implementation), asked,
                                          one_product_per_phase, fake_quantize_kernel)
    call = Call.of(inputs.shape, kernel.shape, inputs.dtype.name, strides, padding,
                   output_padding, dilation, data_format, output_shape, groups)
    _check_channels(call, inputs.shape, kernel.shape)
    shapes.check_output_size(call.output_lengths, call.filters)
    selection = select.select(call, implementation)
    if selection.per_group:
        return grouped(conv3d_transpose, inputs, kernel, groups, bias, dict(
            strides=strides, padding=padding, output_padding=output_padding,
            dilation_rate=dilation, data_format=data_format, output_shape=output_shape,
            implementation=implementation, activation=activation))
    apply = epilogue(bias, activation, kernel, groups)
    x = tf.transpose(inputs, (0, 2, 3, 4, 1)) if data_format == "channels_first" else inputs
    plan, checks = make_plan(x, kernel_size, strides, padding, output_padding, dilation,
                             output_shape)
    if checks:
        with tf.control_dependencies(checks):
            x = tf.identity(x)
    forward, gradient = selection.forward, selection.gradient
    if gradient is forward:
        y, fused = forward.forward(x, kernel, plan, call,
                                   apply if forward.fuses_epilogue else None)
    else:
        y, fused = with_gradient_of(
            lambda x, kernel: forward.forward(x, kernel, plan, call)[0],
            lambda x, kernel, upstream: gradient.gradient(x, kernel, plan, call, upstream),
            x, kernel), False
    y.set_shape([x.shape[0], *plan.static_output_lengths, call.filters])
    if apply is not None and not fused:
        y = apply(y)
    return tf.transpose(y, (0, 4, 1, 2, 3)) if data_format == "channels_first" else y


def _checked_tensors(inputs, kernel):
    """``inputs`` as a dense floating-point tensor and ``kernel`` as a tensor of
    its dtype with a known 5-D shape, or a TypeError or ValueError naming them."""
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
    return inputs, kernel


def _check_channels(call, input_shape, kernel_shape):
    channels = call.input_shape[4]
    if channels is not None and channels != kernel_shape[4]:
        raise ValueError(
            f"The input has {channels} channels but the kernel expects "
            f"{kernel_shape[4]}. Received: inputs.shape={input_shape}, "
            f"kernel.shape={kernel_shape}, data_format={call.data_format!r}")
