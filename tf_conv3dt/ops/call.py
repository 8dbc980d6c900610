"""The record of one call as the lowerings see it: what choosing and tuning read."""

import dataclasses
import math

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import rule


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of ``conv3d_transpose``, its arguments normalised and its
    shapes as the trace knows them (None: unknown until run time).

    The rule's key (:meth:`rule_key`, :meth:`relation`) and tuning's cache
    key (:meth:`tuning_key`) are derived from it, so both read one value.
    """

    dtype: str
    """The compute dtype's name."""
    data_format: str
    input_shape: tuple
    """``(N, D, H, W, C)``: the input as the lowerings see it, channels last."""
    kernel_shape: tuple
    """``(kd, kh, kw, filters // groups, C)``."""
    strides: tuple
    padding: str
    dilation: tuple
    output_lengths: tuple
    """The output's spatial lengths, each None where unknown at trace time."""
    groups: int = 1

    @property
    def kernel_size(self):
        return tuple(self.kernel_shape[:3])

    @property
    def filters(self):
        return self.kernel_shape[3] * self.groups

    @property
    def relation(self):
        """The kernel/stride class the rule is keyed by (``rule.kernel_relation``)."""
        return rule.kernel_relation(self.kernel_size, self.strides)

    def rule_key(self):
        """The rule's entry for this call's dtype on this machine (``rule.rule_key``)."""
        return rule.rule_key(self.dtype)

    @property
    def depthwise(self):
        """Whether every input channel is a group of its own (grouped, not ungrouped)."""
        return self.groups > 1 and self.kernel_shape[4] == self.groups

    @property
    def unrolled_excess(self):
        """``shapes.unrolled_excess``: the argument with more than
        ``shapes.MAX_UNROLLED`` stride phases or taps, and its count, or None."""
        return shapes.unrolled_excess(self.kernel_size, self.strides)

    @property
    def static(self):
        """Whether every size but the batch is known at trace time (what tuning times)."""
        return None not in (*self.input_shape[1:], *self.output_lengths)

    @classmethod
    def of(cls, input_shape, kernel_shape, dtype, strides, padding, output_padding, dilation,
           data_format, output_shape, groups):
        """The record of a call with these normalised arguments, its
        ``input_shape`` as given (``data_format``) and as the trace knows it;
        a requested ``output_shape`` must be reachable from the input's known
        lengths (``shapes.check_requested_shape``)."""
        input_shape = tuple(input_shape)
        if data_format == "channels_first":
            input_shape = (input_shape[0], *input_shape[2:], input_shape[1])
        spatial, kernel_size = input_shape[1:4], tuple(kernel_shape[:3])
        if output_shape is None:
            output_lengths = shapes.output_spatial_shape(spatial, kernel_size, strides, padding,
                                                         output_padding, dilation)
        else:
            output_lengths = shapes.check_requested_shape(output_shape, spatial, kernel_size,
                                                          strides, padding, dilation)
        return cls(dtype, data_format, input_shape, tuple(kernel_shape), strides, padding,
                   dilation, tuple(output_lengths), groups)

    def sizes(self):
        """``(input, output, tap products)`` in bytes, at batch 1 where the batch
        is unknown, or None where another size is: the input, the output, and
        every tap's product of the input's voxels with the filters at once
        (what a lowering that makes them all before summing holds)."""
        if not self.static:
            return None
        batch, *spatial, channels = self.input_shape
        voxels = (batch or 1) * math.prod(spatial)
        itemsize = tf.as_dtype(self.dtype).size
        return (voxels * channels * itemsize,
                (batch or 1) * math.prod(self.output_lengths) * self.filters * itemsize,
                voxels * math.prod(self.kernel_size) * self.filters * itemsize)

    def tuning_key(self):
        """Tuning's cache key: the call as its cost depends on it, with the
        batch as the trace knows it (None for a Keras model's graph)."""
        return (self.dtype, self.data_format, tuple(self.input_shape),
                tuple(self.kernel_shape), tuple(self.strides), self.padding,
                tuple(self.dilation), tuple(self.output_lengths))

    @classmethod
    def from_tuning_key(cls, key):
        """The (ungrouped) call :meth:`tuning_key` gave ``key``, lists or tuples."""
        dtype, data_format, *shaped, padding, dilation, output_lengths = key
        input_shape, kernel_shape, strides = (tuple(value) for value in shaped)
        return cls(dtype, data_format, input_shape, kernel_shape, strides, padding,
                   tuple(dilation), tuple(output_lengths))
