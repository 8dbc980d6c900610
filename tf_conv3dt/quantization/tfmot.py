"""tensorflow-model-optimization's protocols for Conv3DTranspose, imported only on first use."""

import functools
import importlib

import tensorflow as tf
import wrapt

from tf_conv3dt._keras import LEGACY_KERAS
from tf_conv3dt.quantization.modes import qat


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


@functools.lru_cache(maxsize=None)
def _preserving_quantizers():
    """tfmot's prune- and cluster-preserving kernel quantizers without their
    per-tensor fake quantization: the layer puts the kernel on the file's
    per-filter, per-phase int8 grid itself (``ops.int8_grid``), and a
    per-tensor grid before it would leave the converter a DEQUANTIZE'd kernel
    that it cannot fold, so the file would compute in float."""
    collab_opts = "tensorflow_model_optimization.python.core.quantization.keras.collab_opts"
    prune = importlib.import_module(
        f"{collab_opts}.prune_preserve.prune_preserve_quantize_registry")
    cluster = importlib.import_module(
        f"{collab_opts}.cluster_preserve.cluster_preserve_quantize_registry")
    grid = {"num_bits": 8, "per_axis": False, "symmetric": True, "narrow_range": True}

    class PrunePreservingKernel(prune.PrunePreserveDefaultWeightsQuantizer):
        """The pruned kernel's zeros kept (its sparsity mask)."""

        def __init__(self):
            super().__init__(**grid)

        def build(self, tensor_shape, name, layer):
            return self._build_sparsity_mask(name, layer)

        def __call__(self, inputs, training, weights, **kwargs):
            return inputs * weights["sparsity_mask"]

        def get_config(self):
            return {}

    class ClusterPreservingKernel(cluster.ClusterPreserveDefaultWeightsQuantizer):
        """The clustered kernel kept on its centroids, which train (tfmot's
        cluster-preserving step); with ``preserve_sparsity`` the zero
        centroid and the pruned zeros stay zero too."""

        def __init__(self, preserve_sparsity=False):
            super().__init__(preserve_sparsity=preserve_sparsity, **grid)

        def build(self, tensor_shape, name, layer):
            return self._build_clusters(name, layer)

        def __call__(self, inputs, training, weights, **kwargs):
            if not training or cluster.CLUSTER_CENTROIDS not in weights:
                # Inference reads the kernel the training steps assigned.
                if training and self.preserve_sparsity:
                    return inputs * weights[cluster.SPARSITY_MASK]
                return inputs
            clustering = weights[cluster.CLUSTERING_IMPL]
            if self.preserve_sparsity:
                original = weights[cluster.ORIGINAL_WEIGHTS]
                original.assign(original * weights[cluster.SPARSITY_MASK])
                clustering.cluster_centroids.assign(
                    clustering.cluster_centroids * weights[cluster.CENTROIDS_MASK])
                weights[cluster.CLUSTER_CENTROIDS].assign(clustering.cluster_centroids)
            indices = weights[cluster.PULLING_INDICES]
            indices.assign(tf.cast(clustering.get_pulling_indices(
                weights[cluster.ORIGINAL_WEIGHTS]), indices.dtype))
            clustered = clustering.get_clustered_weight(
                indices, weights[cluster.ORIGINAL_WEIGHTS])
            inputs.assign(clustered)
            return clustered

        def get_config(self):
            return {"preserve_sparsity": self.preserve_sparsity}

    return PrunePreservingKernel, ClusterPreservingKernel


def _kernel_quantizer(preserve_sparsity, preserve_clusters):
    """The kernel's collaborative-optimization quantizer
    (:func:`_preserving_quantizers`), or None for neither."""
    prune_preserving, cluster_preserving = _preserving_quantizers()
    if preserve_clusters:
        return cluster_preserving(preserve_sparsity)
    return prune_preserving() if preserve_sparsity else None


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
        prune-preserving step keeps its zeros before that, and with
        ``preserve_clusters`` its cluster-preserving one keeps a clustered
        kernel's centroids (and its zeros too, with both)."""

        def __init__(self, preserve_sparsity=False, preserve_clusters=False):
            self.preserve_sparsity = bool(preserve_sparsity)
            self.preserve_clusters = bool(preserve_clusters)

        def get_weights_and_quantizers(self, layer):
            qat.UnderTfmot().apply(layer)  # asked after the layer's build
            quantizer = _kernel_quantizer(self.preserve_sparsity, self.preserve_clusters)
            return [] if quantizer is None else [(layer.kernel, quantizer)]

        # An activation fused into the products is quantized with the
        # output; another is wrapped by tfmot, after the layer's own range
        # of the products plus the bias (quantization.modes.qat).
        def get_activations_and_quantizers(self, layer):
            if layer.fused_activation is not None:
                return []
            return [(layer.activation, _activation_quantizer())]

        def set_quantize_weights(self, layer, quantize_weights):
            if quantize_weights:
                (layer.kernel,) = quantize_weights

        def set_quantize_activations(self, layer, quantize_activations):
            if quantize_activations:  # none for a fused activation
                (layer.activation,) = quantize_activations

        def get_output_quantizers(self, layer):
            return [_activation_quantizer()] if layer.fused_activation is not None else []

        def get_config(self):
            return {"preserve_sparsity": self.preserve_sparsity,
                    "preserve_clusters": self.preserve_clusters}

    return Conv3DTransposeQuantizeConfig


def register_clusterable(layer_class):
    """tfmot accepts a custom layer for clustering only as an instance of its
    abstract ``ClusterableLayer`` (pruning asks for the method alone): registers
    ``layer_class`` when tfmot is imported, so importing tf_conv3dt never imports it."""
    wrapt.register_post_import_hook(
        lambda module: module.ClusterableLayer.register(layer_class),
        "tensorflow_model_optimization.python.core.clustering.keras.clusterable_layer")
