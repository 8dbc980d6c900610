"""InputQuantizer: the learned int8 range of a tensor entering a quantized Conv3DTranspose."""

from tf_conv3dt._keras import keras
from tf_conv3dt.quantization import fake_quant


@keras.saving.register_keras_serializable(package="tf_conv3dt")
class InputQuantizer(keras.layers.Layer):
    """8-bit fake quantization on a moving-average range (tfmot's
    ``QuantizeLayer``, for Keras 3). ``quantize_model`` puts one before each
    quantization-aware Conv3DTranspose whose input no such layer quantized,
    so that the model computes on the grid an int8 file's input has."""

    def build(self, input_shape):
        self.ranges = fake_quant.add_range(self, "input")
        self.built = True

    def call(self, inputs, training=None):
        return fake_quant.moving_average(inputs, *self.ranges, training)

    def compute_output_shape(self, input_shape):
        return input_shape
