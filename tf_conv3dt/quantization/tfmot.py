"""tensorflow-model-optimization's protocols for Conv3DTranspose, imported only on first use."""

import functools

import wrapt

from tf_conv3dt._keras import LEGACY_KERAS


def tfmot_module():
    """The tensorflow_model_optimization module, or an error saying what it needs."""
    if not LEGACY_KERAS:
        raise RuntimeError(
            "tensorflow-model-optimization works with tf_keras models only (it does "
            "not import under Keras 3): set TF_USE_LEGACY_KERAS=1 before importing "
            "TensorFlow to use it. Under Keras 3, quantize_model(model) trains "
            "quantization-aware without tfmot.")
    try:
        import tensorflow_model_optimization as module
    except ImportError as error:
        raise ImportError("Quantization needs tensorflow-model-optimization: "
                          "pip install 'tf_conv3dt[tfmot]'.") from error
    return module


def _prune_preserve():
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve \
        import prune_preserve_quantize_registry
    return prune_preserve_quantize_registry


@functools.lru_cache(maxsize=None)
def config_class():
    # Defined on first use so that importing tf_conv3dt never imports tfmot.
    keras_quantization = tfmot_module().quantization.keras
    quantizers = keras_quantization.quantizers

    def _activation_quantizer():
        return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                 narrow_range=False)

    class Conv3DTransposeQuantizeConfig(keras_quantization.QuantizeConfig):
        """8-bit activated output (the input is the previous layer's output
        or tfmot's input quantizer). The kernel is put on its int8 grid by
        the layer, product by product, as the file's FULLY_CONNECTED weights
        (``ops.int8_grid``); with ``preserve_sparsity`` tfmot's
        prune-preserving quantizer (per tensor) keeps its zeros before that."""

        def __init__(self, preserve_sparsity=False):
            self.preserve_sparsity = bool(preserve_sparsity)

        def get_weights_and_quantizers(self, layer):
            layer._quantize_for_int8()  # asked after the layer's build
            if not self.preserve_sparsity:
                return []
            return [(layer.kernel, _prune_preserve().PrunePreserveDefaultWeightsQuantizer(
                num_bits=8, per_axis=False, symmetric=True, narrow_range=True))]

        # An activation fused into the products is quantized with the
        # output; another is wrapped by tfmot, after the layer's own range
        # of the products plus the bias (quantization.qat).
        def get_activations_and_quantizers(self, layer):
            if layer._fused_activation() is not None:
                return []
            return [(layer.activation, _activation_quantizer())]

        def set_quantize_weights(self, layer, quantize_weights):
            if quantize_weights:
                (layer.kernel,) = quantize_weights

        def set_quantize_activations(self, layer, quantize_activations):
            if quantize_activations:  # none for a fused activation
                (layer.activation,) = quantize_activations

        def get_output_quantizers(self, layer):
            return [_activation_quantizer()] if layer._fused_activation() is not None else []

        def get_config(self):
            return {"preserve_sparsity": self.preserve_sparsity}

    return Conv3DTransposeQuantizeConfig


def register_clusterable(layer_class):
    """tfmot accepts a custom layer for clustering only as an instance of its
    abstract ``ClusterableLayer`` (pruning asks for the method alone): registers
    ``layer_class`` when tfmot is imported, so importing tf_conv3dt never imports it."""
    wrapt.register_post_import_hook(
        lambda module: module.ClusterableLayer.register(layer_class),
        "tensorflow_model_optimization.python.core.clustering.keras.clusterable_layer")
