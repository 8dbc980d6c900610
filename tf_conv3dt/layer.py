"""The Conv3DTranspose Keras layer: arguments, weights, call and config."""

import numpy as np
import tensorflow as tf

from tf_conv3dt import initializers, ops, shapes
from tf_conv3dt.ops import lowerings
from tf_conv3dt._keras import LEGACY_KERAS, keras, layer_output_shape
from tf_conv3dt.quantization import modes, tfmot
from tf_conv3dt.quantization.modes import keras_int8


@keras.saving.register_keras_serializable(package="tf_conv3dt")
class Conv3DTranspose(keras.layers.Layer):
    """Transposed 3-D convolution, correct on every device and data format.

    Computes ``activation(conv3d_transpose(inputs, kernel) + bias)``: the
    gradient of a 3-D convolution with respect to its input, used to go from
    the shape of a convolution's output back to the shape of its input.
    Unlike the built-in layers it supports ``channels_first`` and
    ``dilation_rate > 1`` on the CPU, and lets each call choose its output
    size among those legal for the input (``output_shape=(D, H, W)``).

    Args:
      filters: int, the number of output channels.
      kernel_size: int or 1 or 3 ints, the size of the window.
      strides: int or 1 or 3 ints. ``strides > 1`` is incompatible with
        ``dilation_rate > 1``.
      padding: "valid" or "same" (case-insensitive). With "same" and
        ``strides=1`` the output has the input's size.
      data_format: "channels_last" or "channels_first"; None means
        ``keras.backend.image_data_format()``.
      output_padding: None, or int or 1 or 3 ints: extra positions at the end
        of each spatial axis, each smaller than its stride.
      dilation_rate: int or 1 or 3 ints.
      activation: activation function or its name; None for linear.
      use_bias: whether to add a bias vector.
      kernel_initializer: initializer of the kernel; "checkerboard_free"
        (:class:`tf_conv3dt.initializers.CheckerboardFree`) starts a strided
        layer as nearest-neighbour up-sampling, free of checkerboard artifacts.
      bias_initializer: initializer of the bias.
      kernel_regularizer: regularizer of the kernel; its loss reaches
        ``layer.losses``.
      bias_regularizer: regularizer of the bias.
      activity_regularizer: regularizer of the output.
      kernel_constraint: constraint the optimizer applies to the kernel after
        each update.
      bias_constraint: constraint applied to the bias likewise.
      implementation: "auto" (where timing is on, the lowering timed fastest
        for a static call on this machine, ``tf_conv3dt.ops.set_autotune``; else
        the fastest for this kernel and stride on this device,
        ``tf_conv3dt.ops.resolve_implementation``), "native"
        (``tf.nn.conv3d_transpose``), "gemm", "gemm_int8" or "subpixel"
        (``tf_conv3dt.ops.lowerings`` lists them).
      quantization: None, or "qat" for quantization-aware training without
        tfmot (``tf_conv3dt.quantization.quantize_model`` sets it): 8-bit fake
        quantization of the kernel and of the activated output on a learned
        range, the tensors an int8 TFLite file quantizes, the layer traced
        through GEMM's int8 form (``tf_conv3dt.quantization.modes.qat``).
      groups: PyTorch's grouped transposed convolution: the input channels
        and the filters in ``groups`` equal groups, each group's inputs
        reaching only its own filters (``groups`` = the input channels is
        depthwise). The kernel is then ``(kd, kh, kw, filters // groups,
        in_channels)``; :func:`kernel_from_torch` and :func:`kernel_to_torch`
        map it to and from PyTorch's ``(in_channels, filters // groups, kd,
        kh, kw)``. Each group is one call of the lowering, but a depthwise
        layer under GEMM (its float form; "auto" takes it on a CPU), which
        runs every channel in one call.
      **kwargs: base layer arguments (name, dtype, trainable, ...).

    Input shape:
      5-D tensor ``(batch, dim1, dim2, dim3, channels)`` for channels_last or
      ``(batch, channels, dim1, dim2, dim3)`` for channels_first.

    Output shape:
      5-D tensor ``(batch, new_dim1, new_dim2, new_dim3, filters)`` for
      channels_last or ``(batch, filters, new_dim1, new_dim2, new_dim3)``
      for channels_first.

    Raises:
      ValueError: when both ``strides > 1`` and ``dilation_rate > 1``, and
        for any argument outside its domain.

    Example:

    >>> x = tf.random.uniform((4, 10, 8, 12, 128))
    >>> y = Conv3DTranspose(32, 2, 2, activation="relu")(x)
    >>> tuple(y.shape)
    (4, 20, 16, 24, 32)
    """

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid",
                 data_format=None, output_padding=None, dilation_rate=(1, 1, 1),
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, implementation="auto",
                 quantization=None, groups=1, **kwargs):
        super().__init__(
            activity_regularizer=_regularizer(activity_regularizer, "activity_regularizer"),
            **kwargs)
        if not shapes.is_int(filters) or filters <= 0:
            raise ValueError(f"The `filters` argument must be a positive integer. Received: "
                             f"filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = shapes.normalize_tuple(kernel_size, "kernel_size")
        self.strides = shapes.normalize_tuple(strides, "strides")
        self.padding = shapes.normalize_choice(padding, "padding", shapes.PADDINGS)
        self.data_format = shapes.normalize_choice(
            data_format or keras.backend.image_data_format(), "data_format", shapes.DATA_FORMATS)
        self.output_padding = None if output_padding is None else shapes.normalize_tuple(
            output_padding, "output_padding", allow_zero=True)
        self.dilation_rate = shapes.normalize_tuple(dilation_rate, "dilation_rate")
        self.groups = shapes.check_groups(groups, filters=self.filters)
        shapes.check_conv_arguments(self.kernel_size, self.strides, self.padding,
                                    self.dilation_rate, self.output_padding)
        self.implementation = shapes.normalize_choice(implementation, "implementation",
                                                      lowerings.implementations())
        self.activation = keras.activations.get(activation)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"The `use_bias` argument must be True or False. "
                            f"Received: use_bias={use_bias!r}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        if isinstance(self.kernel_initializer, initializers.CheckerboardFree):
            self.kernel_initializer = self.kernel_initializer.for_layer(self.kernel_size,
                                                                        self.strides)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizer(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = _regularizer(bias_regularizer, "bias_regularizer")
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        # How it computes: float unless quantized (quantization.modes).
        self.numerics = modes.for_argument(quantization)

    @property
    def quantization(self):
        """The ``quantization=`` argument: the mode it names, or None."""
        return self.numerics.name if self.numerics.configurable else None

    @property
    def fused_activation(self):
        """The activation's name where the op fuses it into its products
        (``ops.FUSED_ACTIVATIONS``, those TFLite fuses into FULLY_CONNECTED),
        else None."""
        return next((name for name in ops.FUSED_ACTIVATIONS
                     if self.activation is keras.activations.get(name)), None)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _check_input_shape(self, input_shape):
        """Rank and channels of a shape given to build or compute_output_shape
        (calls are checked by the InputSpec that build sets)."""
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 5:
            raise ValueError(f"Layer {self.name!r} expects 5-D inputs ({self.data_format}: "
                             "batch, 3 spatial dims and channels). Received: "
                             f"input_shape={input_shape}")
        input_shape = tuple(input_shape.as_list())
        if input_shape[self._channel_axis] is None:
            raise ValueError(f"Layer {self.name!r} needs the channel dimension of its input "
                             f"to be known. Received: input_shape={input_shape}")
        return input_shape

    def __call__(self, *args, **kwargs):
        # Checked before Keras converts or inspects them: its own errors for
        # these inputs are TensorFlow internals.
        self._check_inputs(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def _check_inputs(self, inputs):
        """Refuses inputs the layer cannot compute with: ragged and sparse
        tensors, an unknown rank or channel count, and complex, bool or string
        dtypes (a cast would drop or invent values). Integer inputs are cast to the compute
        dtype in call (voxel data is often uint8 or int16)."""
        if isinstance(inputs, (tf.RaggedTensor, tf.SparseTensor)):
            raise TypeError(f"Layer {self.name!r} takes dense 5-D tensors. "
                            f"Received: {type(inputs).__name__}")
        dtype = getattr(inputs, "dtype", None)
        if dtype is not None:
            dtype = tf.as_dtype(dtype)
            if not (dtype.is_floating or dtype.is_integer):
                raise TypeError(
                    f"Layer {self.name!r} computes in {self.compute_dtype} and takes "
                    f"floating-point or integer inputs. Received: dtype={dtype.name}")
        shape = getattr(inputs, "shape", ())
        if shape is None or tf.TensorShape(shape).rank is None:
            raise ValueError(f"Layer {self.name!r} expects 5-D inputs; their rank is "
                             "unknown. Received: input_shape=<unknown>")
        if len(shape) == 5:  # other ranks: the InputSpec's (or build's) error
            self._check_input_shape(shape)  # the kernel needs the channel count

    def _spatial(self, input_shape):
        return input_shape[1:4] if self.data_format == "channels_last" else input_shape[2:]

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        self._input_channels = int(input_shape[self._channel_axis])
        shapes.check_groups(self.groups, self._input_channels)
        self.input_spec = keras.layers.InputSpec(
            ndim=5, axes={self._channel_axis: self._input_channels})
        if not LEGACY_KERAS and self.quantization_mode == keras_int8.KerasInt8.name:
            self.numerics = keras_int8.KerasInt8()  # a .keras file of a quantized model
        self.numerics.add_kernel(
            self, (*self.kernel_size, self.filters // self.groups, self._input_channels))
        self.bias = self.add_weight(
            name="bias", shape=(self.filters,), initializer=self.bias_initializer,
            regularizer=self.bias_regularizer, constraint=self.bias_constraint, trainable=True,
            dtype=self.dtype) if self.use_bias else None
        self.numerics.add_ranges(self)
        self.built = True

    def call(self, inputs, output_shape=None, training=None):
        """Applies the layer; ``output_shape=(D, H, W)`` picks a legal output size."""
        outputs = ops.conv3d_transpose(
            self.numerics.inputs(self, tf.cast(inputs, self.compute_dtype)),
            self.numerics.kernel(self),
            strides=self.strides,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
            output_shape=output_shape,
            implementation=self.numerics.lowering or self.implementation,
            bias=tf.cast(self.bias, self.compute_dtype) if self.use_bias else None,
            activation=self.fused_activation,
            groups=self.groups,
        )
        return self.numerics.outputs(self, outputs, training)

    def _int8_call(self, *args, **kwargs):
        # Keras 3 calls a layer of an int8 dtype policy here rather than in
        # call: the mode it holds computes either way.
        return self.call(*args, **kwargs)

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras 3's layer quantization, called by ``model.quantize(mode)``:
        "int8" (``quantization.modes.keras_int8``)."""
        if type_check and not LEGACY_KERAS and type(self) is not Conv3DTranspose:
            raise self._not_implemented_error(self.quantize)
        keras_int8.quantize(self, mode)

    def compute_output_shape(self, input_shape, output_shape=None):
        input_shape = self._check_input_shape(input_shape)
        spatial = self._spatial(input_shape)
        if output_shape is None:
            spatial = shapes.output_spatial_shape(spatial, self.kernel_size, self.strides,
                                                  self.padding, self.output_padding,
                                                  self.dilation_rate)
        else:
            spatial = shapes.check_requested_shape(output_shape, spatial, self.kernel_size,
                                                   self.strides, self.padding,
                                                   self.dilation_rate)
        if self.data_format == "channels_last":
            return layer_output_shape((input_shape[0], *spatial, self.filters))
        return layer_output_shape((input_shape[0], self.filters, *spatial))

    def compute_output_spec(self, inputs, output_shape=None):
        # Keras 3 asks this (not call) for symbolic inputs; forwarding the
        # requested size keeps `layer(x, output_shape=...)` in functional models.
        shape = self.compute_output_shape(inputs.shape, output_shape)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_prunable_weights(self):
        """The kernel: what tfmot's ``prune_low_magnitude`` prunes (its
        ``PrunableLayer`` protocol); the bias stays dense, as for Keras's convolutions."""
        return [self.kernel]

    def get_clusterable_weights(self):
        """``(name, weight)`` pairs for tfmot's ``cluster_weights`` (its
        ``ClusterableLayer`` protocol): the kernel, as for Keras's convolutions."""
        return [("kernel", self.kernel)]

    def get_clusterable_algorithm(self, weight_name):
        """None: tfmot's default clustering, which takes any kernel shape."""
        return None

    @classmethod
    def from_config(cls, config):
        """Keras's, except that an invalid argument raises its own error, which
        names the argument and value, rather than Keras 3's TypeError that
        repeats the whole config around it."""
        try:
            return super().from_config(config)
        except TypeError as error:
            cause = error.__context__
            if str(error).startswith("Error when deserializing") and cause is not None:
                raise cause from None
            raise

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in (
            "filters", "kernel_size", "strides", "padding", "data_format", "output_padding",
            "dilation_rate", "use_bias", "implementation", "quantization", "groups")})
        config.update({name: kind.serialize(getattr(self, name)) for name, kind in (
            ("activation", keras.activations), ("kernel_initializer", keras.initializers),
            ("bias_initializer", keras.initializers), ("kernel_regularizer", keras.regularizers),
            ("bias_regularizer", keras.regularizers), ("activity_regularizer", keras.regularizers),
            ("kernel_constraint", keras.constraints), ("bias_constraint", keras.constraints))})
        return config


def kernel_from_torch(weight):
    """A PyTorch ``ConvTranspose3d`` weight ``(in_channels, filters // groups,
    kd, kh, kw)`` as this layer's kernel ``(kd, kh, kw, filters // groups,
    in_channels)``, for ``layer.kernel.assign`` or ``set_weights``; grouped or
    not, the group of input channel ``c`` is ``c // (in_channels // groups)``
    in both."""
    return np.transpose(np.asarray(weight), (2, 3, 4, 1, 0))


def kernel_to_torch(kernel):
    """This layer's kernel as a PyTorch ``ConvTranspose3d`` weight: the
    inverse of :func:`kernel_from_torch`."""
    return np.transpose(np.asarray(kernel), (4, 3, 0, 1, 2))


def _regularizer(value, name):
    """``keras.regularizers.get(value)``, refusing what tf_keras passes
    through uninterpreted (an unknown name comes back as the string)."""
    regularizer = keras.regularizers.get(value)
    if regularizer is not None and not callable(regularizer):
        raise ValueError(f"Could not interpret the `{name}` argument as a regularizer. "
                         f"Received: {name}={value!r}")
    return regularizer


tfmot.register_clusterable(Conv3DTranspose)
