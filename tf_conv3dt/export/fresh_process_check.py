"""Runs an exported SavedModel where tf_conv3dt cannot be imported.

Executed as a script (``python fresh_process_check.py SAVED_MODEL INPUTS.npy
OUTPUTS.npz``) by the export verification and the tests: it blocks the
package before importing anything, then runs the inputs through
``tf.saved_model.load`` and ``keras.layers.TFSMLayer`` (Keras 3, the
consumer's Keras), timing the former. Being proof that the artifact stands
alone, it imports nothing from tf_conv3dt.
"""

import sys


def main(saved_model_dir, inputs_path, outputs_path):
    import statistics
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    try:
        import tf_conv3dt  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("tf_conv3dt was importable; the check would prove nothing")

    x = np.load(inputs_path)
    signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    (key,) = signature.structured_input_signature[1]
    (out_key,) = signature.structured_outputs
    saved_model = signature(**{key: tf.constant(x)})[out_key].numpy()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        signature(**{key: tf.constant(x[:1])})[out_key].numpy()
        times.append(time.perf_counter() - start)
    layer = keras.layers.TFSMLayer(saved_model_dir, call_endpoint="serving_default")
    tfsm = layer(x)
    tfsm = (tfsm[out_key] if isinstance(tfsm, dict) else tfsm).numpy()
    np.savez(outputs_path, saved_model=saved_model, tfsm_layer=tfsm,
             latency_ms=statistics.median(times) * 1e3)


if __name__ == "__main__":
    sys.modules["tf_conv3dt"] = None  # any `import tf_conv3dt` now raises ImportError
    main(*sys.argv[1:4])
