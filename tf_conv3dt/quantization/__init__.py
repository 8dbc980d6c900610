"""Quantization-aware training of Conv3DTranspose, in both Keras flavours.

``quantize_model(model)`` returns a quantization-aware copy of a model:

* under tf_keras (``TF_USE_LEGACY_KERAS=1``, the ``tfmot`` extra), through
  tensorflow-model-optimization, the way tfmot quantizes its own
  Conv2DTranspose: 8-bit symmetric kernel and 8-bit activation;
* under Keras 3, where tfmot does not import, without it: every
  Conv3DTranspose gets ``quantization="qat"`` (8-bit fake quantization of its
  kernel, and of its products and output on learned ranges; its input takes
  the range of the layer before it, or the converter's calibration); other
  layers are left to the TFLite converter's calibration.

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

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.quantization.tfmot import config_class, tfmot_module


def _layer_class():
    # The layer imports this package's pieces, so it is imported on use here.
    from tf_conv3dt.layer import Conv3DTranspose

    return Conv3DTranspose


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
    keras_quantization = tfmot_module().quantization.keras
    annotate = keras_quantization.quantize_annotate_layer

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if not isinstance(layer, _layer_class()):
            return copy
        return annotate(copy, quantize_config(preserve_sparsity))

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        return keras_quantization.quantize_apply(annotated)


def _keras3_quantize_model(model):
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, _layer_class()):
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
    return config_class()(preserve_sparsity)


def quantize_scope():
    """The scope in which saved QAT models with Conv3DTranspose load."""
    return tfmot_module().quantization.keras.quantize_scope(
        {"Conv3DTransposeQuantizeConfig": config_class(), "Conv3DTranspose": _layer_class()})
