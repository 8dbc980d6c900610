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


def register_clusterable(layer_class):
    """tfmot accepts a custom layer for clustering only as an instance of its
    abstract ``ClusterableLayer`` (pruning asks for the method alone): registers
    ``layer_class`` when tfmot is imported, so importing tf_conv3dt never imports it."""
    wrapt.register_post_import_hook(
        lambda module: module.ClusterableLayer.register(layer_class),
        "tensorflow_model_optimization.python.core.clustering.keras.clusterable_layer")
