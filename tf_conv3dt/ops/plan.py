"""The per-axis window and crop a call computes, and the block moves every lowering shares."""

from typing import NamedTuple

import tensorflow as tf

from tf_conv3dt import shapes


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


def lengths(x):
    """``x``'s length on each axis: an int where the trace knows it, else a
    scalar tensor. Known lengths build no shape ops, which keeps the graph,
    and the time to trace it, small."""
    if x.shape.is_fully_defined():
        return list(x.shape)
    dynamic = tf.shape(x)
    return [n if n is not None else dynamic[i] for i, n in enumerate(x.shape)]


def make_plan(x, kernel_size, strides, padding, output_padding, dilation, output_shape):
    static_in = tuple(x.shape[1:4])
    sizes = lengths(x)[1:4]
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


def overlaps_window(plan, shifts):
    """Whether blocks [q, q + n) meet the window [first, n + extra) on every
    axis (always so for a run-time n, whose window starts at 0)."""
    return all(
        not isinstance(n, int) or (q + n > first and q < n + extra)
        for q, n, first, extra in zip(shifts, plan.input_lengths, plan.first_block,
                                      plan.extra_blocks))


def _window_moves(plan, shifts):
    """Per axis, for blocks shifted by ``shifts``: the first one the window
    keeps, how many it cuts, and the zeros it pads before and after."""
    begin, cut, paddings = [], [], []
    for q, first, extra in zip(shifts, plan.first_block, plan.extra_blocks):
        # The blocks cover [q, q + n); the window is [first, n + extra).
        begin.append(max(first - q, 0))
        cut.append(max(first - q, 0) + max(q - extra, 0))
        paddings.append([max(q - first, 0), max(extra - q, 0)])
    return begin, cut, paddings


def block_window_pads(plan, shifts):
    """Whether :func:`block_window` pads blocks shifted by ``shifts`` with zeros."""
    return any(p for pair in _window_moves(plan, shifts)[2] for p in pair)


def block_window(blocks, plan, shifts):
    """Moves ``(N, n1, n2, n3, C)`` blocks, shifted by ``shifts``, into the
    plan's window of output blocks: what falls outside is sliced off, what the
    window has beyond them is zero. A tap at shift 0 inside the window is
    returned as it is, without a copy."""
    begin, cut, paddings = _window_moves(plan, shifts)
    if any(cut):
        # tf.slice, not Python slicing: StridedSlice's gradient is far slower
        # than Slice's (a Pad) on CPU.
        sizes = [-1] + [n - c for n, c in zip(plan.input_lengths, cut)] + [-1]
        blocks = tf.slice(blocks, [0, *begin, 0], sizes)
    if any(p for pair in paddings for p in pair):
        blocks = tf.pad(blocks, [[0, 0], *paddings, [0, 0]])
    return blocks


def block_window_gradient(window, plan, shifts):
    """The gradient of :func:`block_window`'s ``blocks``, given its result's
    gradient ``window``: the window's part the blocks landed in, zero where
    the window cut them."""
    begin, cut, paddings = _window_moves(plan, shifts)
    if any(p for pair in paddings for p in pair):
        sizes = [-1] + [n - c for n, c in zip(plan.input_lengths, cut)] + [-1]
        window = tf.slice(window, [0, *[before for before, _ in paddings], 0], sizes)
    if any(cut):
        window = tf.pad(window, [[0, 0], *[[b, c - b] for b, c in zip(begin, cut)], [0, 0]])
    return window


def interleave_and_crop(phases, batch, plan, strides, filters):
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
