"""The model.keras format: the Keras model itself, verified by reloading it in safe mode."""

import os

from tf_conv3dt._keras import keras
from tf_conv3dt.export.report import EXACT, Row, error_metrics
from tf_conv3dt.export.formats import Format, refuse_a_directory, register

FILE = "model.keras"


class KerasFile(Format):
    """model.keras, as ``model.save`` writes it; it keeps each layer's own
    implementation, so it traces nothing."""

    name = "keras"

    def check_destination(self, job):
        refuse_a_directory(os.path.join(job.out_dir, FILE), job.out_dir)

    def stage(self, run):
        run.step("writing model.keras and reloading it (safe mode)")
        run.job.model.save(run.staging.path_of(FILE))
        yield FILE

    def verify(self, run, staged):
        reloaded = keras.models.load_model(run.staging.path_of(staged), safe_mode=True,
                                           compile=False)
        return [Row(
            artifact="keras", path=os.path.join(run.job.out_dir, FILE),
            size_bytes=run.staging.size_of(staged), staged=staged,
            error=error_metrics(reloaded(run.inputs, training=False), run.expected,
                                       **EXACT))]


register(KerasFile())
