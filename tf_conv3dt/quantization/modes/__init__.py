"""How a Conv3DTranspose computes: its modes' interface (float by default), and which modes exist.

A layer holds one mode (``layer.numerics``) and asks it, never its name,
what it builds, the kernel it computes with, what becomes of its input and
of the op's output, and which lowering it needs. A mode is a module of this
package; ``MODES`` names every one. Three entry points set them: the
layer's ``quantization=`` argument ("qat"), Keras 3's ``quantize("int8")``
and tfmot's ``QuantizeConfig`` (``quantization.tfmot``).
"""

import tensorflow as tf

from tf_conv3dt import shapes


class Mode:
    """Float: a trainable float kernel, the input and the op's output as they
    are, the layer's own ``implementation``. A quantization mode subclasses
    it and overrides what it changes; the layer holds an instance of its own,
    which may keep the layer's weights it adds."""

    name = None
    """What names it: the layer's ``quantization=``, Keras 3's quantization
    mode, or tfmot's ("tfmot"); None for float."""
    configurable = False
    """Whether the layer's ``quantization=`` names it (its config then keeps it)."""
    lowering = None
    """What the layer asks the op for (a lowering's name, or a Lowering);
    None for the layer's own ``implementation``."""

    def add_kernel(self, layer, shape):
        """Adds the kernel weights of ``shape`` to ``layer`` as it is built."""
        layer.kernel = layer.add_weight(
            name="kernel", shape=shape, initializer=layer.kernel_initializer,
            regularizer=layer.kernel_regularizer, constraint=layer.kernel_constraint,
            trainable=True, dtype=layer.dtype)

    def add_ranges(self, layer):
        """Adds the ranges it learns, after the kernel and the bias."""

    def apply(self, layer):
        """Makes the built ``layer`` compute in this mode from now on, adding
        its ranges; a layer that holds a mode of this kind already keeps it."""
        if type(layer.numerics) is not type(self):
            layer.numerics = self
            self.add_ranges(layer)

    def inputs(self, layer, inputs):
        """The input the op computes with, from the layer's (in its compute dtype)."""
        return inputs

    def kernel(self, layer):
        """The kernel the op computes with, in the layer's compute dtype."""
        return tf.cast(layer.kernel, layer.compute_dtype)

    def outputs(self, layer, outputs, training):
        """The layer's output from the op's: the activation applied where the
        op did not fuse it."""
        return outputs if layer.fused_activation is not None else layer.activation(outputs)


def for_argument(quantization):
    """A new instance of the mode the layer's ``quantization=`` names (None:
    float); a ValueError names the argument and the value otherwise."""
    if not quantization:
        return Mode()
    configurable = [name for name, mode in MODES.items() if mode.configurable]
    return MODES[shapes.normalize_choice(quantization, "quantization", configurable)]()


# The modes, each of which subclasses Mode, by name: the one list of them.
from tf_conv3dt.quantization.modes import keras_int8, qat  # noqa: E402

MODES = {mode.name: mode for mode in (qat.QAT, qat.UnderTfmot, keras_int8.KerasInt8)}
