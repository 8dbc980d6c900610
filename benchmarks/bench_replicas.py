"""Training-step throughput of a model holding Conv3DTranspose on 1 and 2 replicas.

Each replica count runs in its own process (TensorFlow fixes its logical
devices at start-up): MirroredStrategy over N logical CPU devices of this
machine, a global batch of 8, examples per second over timed steps of
``model.fit``. On one machine both replicas share its cores, so this
measures the cost of the strategy's all-reduce and splitting more than any
speed-up; on several GPUs or hosts each replica has its own.

Usage: python benchmarks/bench_replicas.py [--steps 30]
"""

import argparse
import json
import subprocess
import sys
import time

GLOBAL_BATCH = 8


def measure(replicas, steps):
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import tf_conv3dt
    from tf_conv3dt._keras import keras
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
                if replicas > 1 else tf.distribute.OneDeviceStrategy("/cpu:0"))
    with strategy.scope():
        inputs = keras.Input((8, 8, 8, 32))
        hidden = tf_conv3dt.Conv3DTranspose(32, 3, 2, padding="same", activation="relu")(inputs)
        outputs = tf_conv3dt.Conv3DTranspose(1, 3, 1, padding="same")(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((GLOBAL_BATCH * steps, 8, 8, 8, 32)).astype("float32")
    y = rng.standard_normal((GLOBAL_BATCH * steps, 16, 16, 16, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).cache()
    model.fit(dataset.take(3), epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return dict(replicas=replicas, examples_per_s=GLOBAL_BATCH * steps / seconds,
                ms_per_step=1000 * seconds / steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--replicas", type=int, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.replicas:
        print(json.dumps(measure(args.replicas, args.steps)))
        return
    rows = []
    for replicas in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--replicas", str(replicas),
                              "--steps", str(args.steps)], capture_output=True, text=True,
                             check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'replicas':>8} {'examples/s':>11} {'ms/step':>8}")
    for row in rows:
        print(f"{row['replicas']:>8} {row['examples_per_s']:11.1f} {row['ms_per_step']:8.1f}")


if __name__ == "__main__":
    main()
