"""Dilation as an undilated transposed convolution of each residue class (space-to-batch)."""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops.plan import make_plan


def dilated_as_undilated(undilated, x, kernel, plan, strides, padding, dilation):
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
    lattice_plan, _ = make_plan(lattice, kernel_size, (1, 1, 1), "valid", None, (1, 1, 1), None)
    full = undilated(lattice, kernel, lattice_plan, (1, 1, 1))
    for axis, d in reversed(list(enumerate(dilation))):
        full = _batch_to_space(full, axis, d)
    begin = [shapes.crop_start(n, o, k, 1, padding, d)
             for n, o, k, d in zip(plan.input_lengths, plan.output_lengths, kernel_size, dilation)]
    return tf.slice(full, [0, *begin, 0], [-1, *plan.output_lengths, -1])


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
