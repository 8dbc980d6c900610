"""Argument normalisation and output-length arithmetic for 3-D transposed convolution.

Pure Python: nothing here imports TensorFlow. The length functions use only
``+ - * //`` on the input length, so they also accept a scalar tensor (a
dynamic batch or spatial size) and return a tensor.

Conventions (shared with ``tf.nn.conv3d_transpose`` and Keras): along one axis
an input of length ``n``, kernel ``k``, stride ``s`` and dilation ``d`` give a
*full* output of ``(n - 1) * s + (k - 1) * d + 1`` positions. The requested
output length ``L`` must be one that a forward convolution with the same
arguments maps back to ``n``; TF then keeps ``L`` positions of the full output
starting at ``padding_before`` (see :func:`crop_start`).
"""

import math
import numbers
from collections.abc import Iterable, Mapping, Set

SPATIAL_DIMS = 3
PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")
# Lengths and shapes travel as int32 tensors (TensorFlow's shape arguments and
# TFLite's), so no length may exceed this, nor may one example's output hold
# more elements (8 GiB of float32).
MAX_LENGTH = 2**31 - 1
# The GEMM and sub-pixel lowerings build a few ops per stride phase and per
# kernel tap; beyond this many of either the graph itself would not fit.
MAX_UNROLLED = 4096


def normalize_tuple(value, name, allow_zero=False):
    """Returns ``value`` as a tuple of 3 ints, from an int or 1 or 3 ints.

    Raises:
      TypeError: when ``value`` or an element of it is not an integer, or
        ``value`` is unordered (a set or a mapping).
      ValueError: when the sequence has another length, or an element is
        negative (or zero, unless ``allow_zero``) or above ``MAX_LENGTH``.
    """
    if is_int(value):
        values = (value,) * SPATIAL_DIMS
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes, Set, Mapping)):
        value = tuple(value)  # lists, TensorShapes, NumPy arrays
        if len(value) not in (1, SPATIAL_DIMS) or not all(is_int(v) for v in value):
            raise (ValueError if all(is_int(v) for v in value) else TypeError)(
                f"The `{name}` argument must be an int or a tuple/list of 1 or "
                f"{SPATIAL_DIMS} ints. Received: {name}={value!r}"
            )
        values = tuple(value) * (SPATIAL_DIMS if len(value) == 1 else 1)
    else:
        raise TypeError(
            f"The `{name}` argument must be an int or a tuple/list of 1 or "
            f"{SPATIAL_DIMS} ints. Received: {name}={value!r}"
        )
    values = tuple(int(v) for v in values)
    lowest = 0 if allow_zero else 1
    if any(v < lowest for v in values):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"The `{name}` argument must contain only {kind} integers. "
            f"Received: {name}={value!r}"
        )
    if max(values) > MAX_LENGTH:
        raise ValueError(
            f"The `{name}` argument must contain integers of at most {MAX_LENGTH} "
            f"(lengths are int32). Received: {name}={value!r}"
        )
    return values


def normalize_choice(value, name, choices):
    """Returns ``value`` lower-cased if it is one of ``choices``."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(
            f"The `{name}` argument must be one of {', '.join(map(repr, choices))}. "
            f"Received: {name}={value!r}"
        )
    return value.lower()


def check_conv_arguments(kernel_size, strides, padding, dilation_rate, output_padding):
    """Checks the rules that tie arguments together, once each."""
    spans = [effective_kernel_size(k, d) for k, d in zip(kernel_size, dilation_rate)]
    if max(spans) > MAX_LENGTH:
        raise ValueError(
            f"The dilated kernel spans {tuple(spans)} positions; each must be at most "
            f"{MAX_LENGTH}. Received: kernel_size={kernel_size}, "
            f"dilation_rate={dilation_rate}"
        )
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "`strides > 1` is incompatible with `dilation_rate > 1`. "
            f"Received: strides={strides}, dilation_rate={dilation_rate}"
        )
    if output_padding is None:
        return
    if any(p >= s for p, s in zip(output_padding, strides)):
        raise ValueError(
            "Each `output_padding` must be smaller than its stride. "
            f"Received: output_padding={output_padding}, strides={strides}"
        )
    if padding == "same":
        # "same" crops k_eff // 2 from each side, which for an even kernel
        # leaves (n - 1) * s positions: one short of the shortest legal output.
        for k, d, p in zip(kernel_size, dilation_rate, output_padding):
            if effective_kernel_size(k, d) % 2 == 0 and p == 0:
                raise ValueError(
                    "With padding='same' and an even (dilated) kernel size, "
                    "`output_padding` must be at least 1 on that axis. Received: "
                    f"output_padding={output_padding}, kernel_size={kernel_size}, "
                    f"dilation_rate={dilation_rate}"
                )


def effective_kernel_size(kernel_size, dilation):
    """Span of a dilated kernel: taps at 0, d, ..., (k - 1) * d."""
    return (kernel_size - 1) * dilation + 1


def max_block_shift(kernel_size, stride, dilation=1):
    """How many stride-blocks past its input position the last tap lands:
    tap ``j`` writes to ``i * s + j * d``, i.e. block ``i + (j * d) // s``."""
    return (kernel_size - 1) * dilation // stride


def full_length(input_length, kernel_size, stride, dilation=1):
    """Length of the uncropped transposed convolution along one axis."""
    return (input_length - 1) * stride + effective_kernel_size(kernel_size, dilation)


def output_length(input_length, kernel_size, stride, padding, output_padding=None,
                  dilation=1):
    """Output length along one axis, as Keras defines it; None stays None.

    Without ``output_padding``: "valid" gives the full length, widened to
    ``input_length * stride`` when the kernel is shorter than the stride;
    "same" gives ``input_length * stride``. With ``output_padding``: the
    length ``(n - 1) * s + k_eff - 2 * (k_eff // 2 if "same" else 0) + p``.
    """
    if input_length is None:
        return None
    kernel = effective_kernel_size(kernel_size, dilation)
    if output_padding is None:
        if padding == "valid":
            return input_length * stride + max(kernel - stride, 0)
        return input_length * stride
    pad = kernel // 2 if padding == "same" else 0
    return (input_length - 1) * stride + kernel - 2 * pad + output_padding


def output_length_range(input_length, kernel_size, stride, padding, dilation=1):
    """The (shortest, longest) output lengths legal for ``input_length``.

    A length is legal when the forward convolution with the same arguments
    maps it back to ``input_length``: "valid" allows ``full`` to
    ``full + stride - 1``, "same" allows ``(n - 1) * s + 1`` to ``n * s``.
    """
    if padding == "valid":
        shortest = full_length(input_length, kernel_size, stride, dilation)
        return shortest, shortest + stride - 1
    return (input_length - 1) * stride + 1, input_length * stride


def crop_start(input_length, output_len, kernel_size, stride, padding, dilation=1):
    """Index of the full output at which TF's output of ``output_len`` starts.

    TF pads the forward convolution by ``max(full - output_len, 0)`` in
    total for "same", the smaller half before; "valid" pads nothing.
    """
    if padding == "valid":
        return 0
    total = full_length(input_length, kernel_size, stride, dilation) - output_len
    # (t + |t|) // 2 is max(t, 0) for ints and for symbolic scalar tensors.
    return (total + abs(total)) // 4


def output_spatial_shape(input_spatial_shape, kernel_size, strides, padding,
                         output_padding=None, dilation_rate=(1, 1, 1)):
    """Applies :func:`output_length` to each of the 3 spatial axes."""
    if output_padding is None:
        output_padding = (None,) * SPATIAL_DIMS
    return tuple(
        output_length(n, k, s, padding, p, d)
        for n, k, s, p, d in zip(
            input_spatial_shape, kernel_size, strides, output_padding, dilation_rate
        )
    )


def check_requested_shape(requested, input_spatial_shape, kernel_size, strides,
                          padding, dilation_rate):
    """Validates ``output_shape=(D, H, W)`` requested at call time.

    Returns the requested lengths as a tuple of ints. Axes whose input length
    is unknown (None) are checked when the graph runs.
    """
    requested = normalize_tuple(requested, "output_shape")
    for axis, (want, n, k, s, d) in enumerate(
        zip(requested, input_spatial_shape, kernel_size, strides, dilation_rate)
    ):
        if n is None:
            continue
        shortest, longest = output_length_range(n, k, s, padding, d)
        if not shortest <= want <= longest:
            raise ValueError(
                f"Requested output_shape={requested} is not reachable: for an "
                f"input of spatial shape {tuple(input_spatial_shape)}, spatial "
                f"axis {axis} must be between {shortest} and {longest} "
                f"(kernel_size={k}, strides={s}, dilation_rate={d}, "
                f"padding={padding!r})."
            )
    return requested


def check_output_size(spatial_shape, channels):
    """Refuses outputs whose lengths or per-example size exceed ``MAX_LENGTH``
    (known lengths only; None is unknown until run time)."""
    known = [n for n in spatial_shape if n is not None]
    if any(n > MAX_LENGTH for n in known) or math.prod(known) * channels > MAX_LENGTH:
        raise ValueError(
            f"The output would have spatial shape {tuple(spatial_shape)} and {channels} "
            f"channels: more than {MAX_LENGTH} elements per example, or a length "
            "beyond int32. Use smaller strides, kernel_size, dilation_rate or output_shape."
        )


def unrolled_excess(kernel_size, strides):
    """``(argument, count)`` of the first of strides (stride phases) and
    kernel_size (taps) beyond ``MAX_UNROLLED``, else None."""
    for name, value in (("strides", strides), ("kernel_size", kernel_size)):
        if math.prod(value) > MAX_UNROLLED:
            return name, math.prod(value)
    return None


def check_groups(groups, in_channels=None, filters=None):
    """``groups`` as an int that divides ``in_channels`` and ``filters`` (each
    checked where given): PyTorch's grouped convolution, where group ``i``
    maps its ``in_channels // groups`` inputs to its ``filters // groups``
    outputs."""
    if not is_int(groups) or groups < 1:
        raise ValueError(f"The `groups` argument must be a positive integer. Received: "
                         f"groups={groups!r}")
    for name, count in (("input channels", in_channels), ("filters", filters)):
        if count is not None and count % groups:
            raise ValueError(f"`groups`={groups} must divide the {name}, {count}; choose a "
                             f"common divisor of the input channels and the filters "
                             f"(groups=1, or groups=channels for depthwise).")
    return int(groups)


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
