"""The models an export starts from: the Keras reference's example, or a user's .keras file."""

from tf_conv3dt import model_file
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.layer import Conv3DTranspose
from tf_conv3dt.ops import tuning
from tf_conv3dt._keras import keras

REFERENCE_INPUT_SHAPE = (10, 8, 12, 128)


# Building (tf_keras) and loading call the layers: nothing to time there.
@tuning.switched(False)
def reference_model():
    """The Keras reference's example: (10, 8, 12, 128) -> Conv3DTranspose(32, 2, 2, relu)."""
    inputs = keras.Input(REFERENCE_INPUT_SHAPE, name="voxels")
    outputs = Conv3DTranspose(32, 2, 2, activation="relu", name="upsampled")(inputs)
    return keras.Model(inputs, outputs, name="conv3dt_reference")


@tuning.switched(False)
def load_model(path):
    """Loads a .keras model in safe mode, with errors meant for the user."""
    try:
        model = model_file.load(path)
    except ValueError as error:
        raise ExportError(str(error), "model", path) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("must have one input and one output", "model", path)
    return model
