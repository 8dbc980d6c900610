"""Quantization-aware training of Conv3DTranspose, in both Keras flavours.

``quantize_model(model)`` returns a quantization-aware copy of a model:

* under tf_keras (``TF_USE_LEGACY_KERAS=1``, the ``tfmot`` extra), through
  tensorflow-model-optimization, the way tfmot quantizes its own
  Conv2DTranspose: 8-bit symmetric kernel and 8-bit activation;
* under Keras 3, where tfmot does not import, without it: every
  Conv3DTranspose gets ``quantization="qat"`` (8-bit fake quantization of its
  input, kernel, products and output with learned ranges); other layers are
  left to the TFLite converter's calibration.

Either way a quantized layer traces itself through the int8-oriented GEMM
lowering, so ``tf.lite.TFLiteConverter.from_keras_model(qat_model)`` with
``Optimize.DEFAULT`` gives integer FULLY_CONNECTED ops, never the float-only
CONV_3D_TRANSPOSE.

Example::

    qat_model = tf_conv3dt.quantization.quantize_model(model)
    qat_model.compile(...); qat_model.fit(...)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()

    with tf_conv3dt.quantization.quantize_scope():  # tf_keras .h5 files
        restored = tf_keras.models.load_model("qat.h5")
"""

import functools

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.layer import Conv3DTranspose


def quantize_model(model, preserve_sparsity=False):
    """A quantization-aware copy of ``model``, its weights copied.

    tf_keras: every Conv3DTranspose is annotated with :func:`quantize_config`;
    other layers keep the annotations they have (annotate them first with
    ``tfmot.quantization.keras.quantize_annotate_layer`` to quantize them too).
    ``preserve_sparsity=True`` is tfmot's pruning-preserving QAT for our
    layers: the zeros of a pruned kernel stay zero in the quantized kernel.
    Keras 3: every Conv3DTranspose is rebuilt with ``quantization="qat"``.
    """
    if not LEGACY_KERAS:
        if preserve_sparsity:
            raise ValueError("preserve_sparsity=True is tfmot's pruning-preserving QAT, "
                             "which needs tf_keras (TF_USE_LEGACY_KERAS=1).")
        return _keras3_quantize_model(model)
    tfmot = _tfmot()
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if not isinstance(layer, Conv3DTranspose):
            return copy
        return annotate(copy, quantize_config(preserve_sparsity))

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated)


def _keras3_quantize_model(model):
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, Conv3DTranspose):
            config["quantization"] = "qat"
        return layer.__class__.from_config(config)

    quantized = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, quantized.layers):
        # The new range variables come after the copied kernel and bias.
        for old, new in zip(source.weights, target.weights):
            new.assign(old)
    return quantized


def quantize_config(preserve_sparsity=False):
    """The tfmot ``QuantizeConfig`` for Conv3DTranspose; with
    ``preserve_sparsity`` its kernel quantizer keeps the kernel's zeros."""
    return _config_class()(preserve_sparsity)


def quantize_scope():
    """The scope in which saved QAT models with Conv3DTranspose load."""
    return _tfmot().quantization.keras.quantize_scope(
        {"Conv3DTransposeQuantizeConfig": _config_class(), "Conv3DTranspose": Conv3DTranspose})


def _tfmot():
    if not LEGACY_KERAS:
        raise RuntimeError(
            "tensorflow-model-optimization works with tf_keras models only (it does "
            "not import under Keras 3): set TF_USE_LEGACY_KERAS=1 before importing "
            "TensorFlow to use it. Under Keras 3, quantize_model(model) trains "
            "quantization-aware without tfmot.")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError("Quantization needs tensorflow-model-optimization: "
                          "pip install 'tf_conv3dt[tfmot]'.") from error
    return tfmot


def _prune_preserve():
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve \
        import prune_preserve_quantize_registry
    return prune_preserve_quantize_registry


@functools.lru_cache(maxsize=None)
def _config_class():
    # Defined on first use so that importing tf_conv3dt never imports tfmot.
    keras_quantization = _tfmot().quantization.keras
    quantizers = keras_quantization.quantizers

    class Conv3DTransposeQuantizeConfig(keras_quantization.QuantizeConfig):
        """8-bit kernel (per tensor, symmetric) and activation, as tfmot's
        default for Conv2DTranspose."""

        def __init__(self, preserve_sparsity=False):
            self.preserve_sparsity = bool(preserve_sparsity)

        def get_weights_and_quantizers(self, layer):
            layer._add_quantization_ranges("conv_output")  # asked after the layer's build
            kernel_quantizer = (_prune_preserve().PrunePreserveDefaultWeightsQuantizer
                                if self.preserve_sparsity else quantizers.LastValueQuantizer)
            return [(layer.kernel, kernel_quantizer(
                num_bits=8, per_axis=False, symmetric=True, narrow_range=True))]

        def get_activations_and_quantizers(self, layer):
            return [(layer.activation, quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

        def set_quantize_weights(self, layer, quantize_weights):
            (layer.kernel,) = quantize_weights

        def set_quantize_activations(self, layer, quantize_activations):
            (layer.activation,) = quantize_activations

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {"preserve_sparsity": self.preserve_sparsity}

    return Conv3DTransposeQuantizeConfig
