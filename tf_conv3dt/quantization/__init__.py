"""Quantization-aware training of Conv3DTranspose, in both Keras flavours.

``quantize_model(model)`` returns a quantization-aware copy of a model:

* under tf_keras (``TF_USE_LEGACY_KERAS=1``, the ``tfmot`` extra), through
  tensorflow-model-optimization, the way tfmot quantizes its own
  Conv2DTranspose: 8-bit symmetric kernel and 8-bit activated output;
* under Keras 3, where tfmot does not import, without it: every
  Conv3DTranspose gets ``quantization="qat"`` (8-bit fake quantization of its
  kernel and activated output, and of its input through an
  :class:`InputQuantizer` where no such layer quantized it, on learned
  ranges); other layers are left to the TFLite converter's calibration.

Either way a quantized layer traces itself through the int8-oriented GEMM
lowering, with its bias and activation fused into each stride phase's
product (``quantization.modes.qat``), so ``tf.lite.TFLiteConverter.from_keras_model(qat_model)``
with ``Optimize.DEFAULT`` gives integer FULLY_CONNECTED ops, never the
float-only CONV_3D_TRANSPOSE, and computes what the QAT model computes.

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
from tf_conv3dt.quantization.input_quantizer import InputQuantizer
from tf_conv3dt.quantization.modes.qat import QAT
from tf_conv3dt.quantization.tfmot import config_class, tfmot_module

__all__ = ["InputQuantizer", "quantize_config", "quantize_model", "quantize_scope"]


def _layer_class():
    # The layer imports this package's pieces, so it is imported on use here.
    from tf_conv3dt.layer import Conv3DTranspose

    return Conv3DTranspose


def quantize_model(model, preserve_sparsity=False, preserve_clusters=False):
    """A quantization-aware copy of ``model``, its weights copied.

    tf_keras: every Conv3DTranspose is annotated with :func:`quantize_config`;
    other layers keep the annotations they have (annotate them first with
    ``tfmot.quantization.keras.quantize_annotate_layer`` to quantize them too).
    ``preserve_sparsity=True`` is tfmot's pruning-preserving QAT for our
    layers: the zeros of a pruned kernel stay zero in the quantized kernel.
    ``preserve_clusters=True`` is tfmot's cluster-preserving QAT: a kernel
    clustered by ``cluster_weights`` (and stripped) keeps its clusters, so
    the kernel the layer computes with has at most that many distinct
    values (each centroid still trains); with both, its zeros stay zero too.
    Keras 3: every Conv3DTranspose is rebuilt with ``quantization="qat"``,
    after an :class:`InputQuantizer` where its input does not come from
    another of them (the model's input, say).
    """
    if not LEGACY_KERAS:
        for name, value, scheme in (("preserve_sparsity", preserve_sparsity, "pruning"),
                                    ("preserve_clusters", preserve_clusters, "cluster")):
            if value:
                raise ValueError(f"{name}=True is tfmot's {scheme}-preserving QAT, "
                                 "which needs tf_keras (TF_USE_LEGACY_KERAS=1).")
        return _keras3_quantize_model(model)
    keras_quantization = tfmot_module().quantization.keras
    annotate = keras_quantization.quantize_annotate_layer

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if not isinstance(layer, _layer_class()):
            return copy
        return annotate(copy, quantize_config(preserve_sparsity, preserve_clusters))

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        return keras_quantization.quantize_apply(annotated)


def _keras3_quantize_model(model):
    layer_class = _layer_class()

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layer_class):
            config["quantization"] = QAT.name
        return layer.__class__.from_config(config)

    def on_a_grid(producer):
        """Whether a layer's output is already fake-quantized (no InputQuantizer needed)."""
        return isinstance(producer, InputQuantizer) or (
            isinstance(producer, layer_class) and producer.quantization == QAT.name)

    def call(layer, *args, **kwargs):
        if isinstance(layer, layer_class) and args:
            history = getattr(args[0], "_keras_history", None)
            if not on_a_grid(history.operation if history else None):
                args = (InputQuantizer(name=f"{layer.name}_input")(args[0]), *args[1:])
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        layers = []
        for layer in map(clone, model.layers):
            if isinstance(layer, layer_class) and not (layers and on_a_grid(layers[-1])):
                layers.append(InputQuantizer(name=f"{layer.name}_input"))
            layers.append(layer)
        inputs = [keras.Input(model.input_shape[1:])] if model.built else []
        quantized = keras.Sequential(inputs + layers, name=model.name)
    else:
        quantized = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for source in (layer for layer in model.layers if layer.weights):
        # The new range variables come after the copied kernel and bias.
        for old, new in zip(source.weights, quantized.get_layer(source.name).weights):
            new.assign(old)
    return quantized


def quantize_config(preserve_sparsity=False, preserve_clusters=False):
    """The tfmot ``QuantizeConfig`` for Conv3DTranspose; with
    ``preserve_sparsity`` its kernel quantizer keeps the kernel's zeros, with
    ``preserve_clusters`` its clusters (both: both)."""
    return config_class()(preserve_sparsity, preserve_clusters)


def quantize_scope():
    """The scope in which saved QAT models with Conv3DTranspose load."""
    return tfmot_module().quantization.keras.quantize_scope(
        {"Conv3DTransposeQuantizeConfig": config_class(), "Conv3DTranspose": _layer_class()})
