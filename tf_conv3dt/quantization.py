"""Quantization-aware training of Conv3DTranspose with tensorflow-model-optimization.

tfmot builds on tf_keras, so this works under ``TF_USE_LEGACY_KERAS=1`` (and
needs the ``tfmot`` extra). The layer is quantized the way tfmot quantizes its
own Conv2DTranspose: 8-bit symmetric weights (the kernel) and an 8-bit
activation. A QAT model exports like any other (``tf_conv3dt.export``), its
int8 TFLite file integer end to end through the GEMM lowering.

Example (tf_keras)::

    qat_model = tf_conv3dt.quantization.quantize_model(model)
    qat_model.compile(...); qat_model.fit(...)
    with tf_conv3dt.quantization.quantize_scope():
        restored = tf_keras.models.load_model("qat.h5")
"""

import functools

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.layer import Conv3DTranspose


def quantize_model(model):
    """A quantization-aware copy of ``model``.

    Every Conv3DTranspose is annotated with :func:`quantize_config`; other
    layers keep the annotations they have (annotate them first with
    ``tfmot.quantization.keras.quantize_annotate_layer`` to quantize them too).
    """
    tfmot = _tfmot()
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return annotate(copy, quantize_config()) if isinstance(layer, Conv3DTranspose) else copy

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated)


def quantize_config():
    """The tfmot ``QuantizeConfig`` for Conv3DTranspose."""
    return _config_class()()


def quantize_scope():
    """The scope in which saved QAT models with Conv3DTranspose load."""
    return _tfmot().quantization.keras.quantize_scope(
        {"Conv3DTransposeQuantizeConfig": _config_class(), "Conv3DTranspose": Conv3DTranspose})


def _tfmot():
    if not LEGACY_KERAS:
        raise RuntimeError(
            "tensorflow-model-optimization quantizes tf_keras models only: set "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow to build the model "
            "with tf_keras.")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError("Quantization needs tensorflow-model-optimization: "
                          "pip install 'tf_conv3dt[tfmot]'.") from error
    return tfmot


@functools.lru_cache(maxsize=None)
def _config_class():
    # Defined on first use so that importing tf_conv3dt never imports tfmot.
    keras_quantization = _tfmot().quantization.keras
    quantizers = keras_quantization.quantizers

    class Conv3DTransposeQuantizeConfig(keras_quantization.QuantizeConfig):
        """8-bit kernel (per tensor, symmetric) and activation, as tfmot's
        default for Conv2DTranspose."""

        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, quantizers.LastValueQuantizer(
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
            return {}

    return Conv3DTransposeQuantizeConfig
