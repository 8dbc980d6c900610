"""Training runs under tf.distribute, each in its own process (run by test_distribute.py).

TensorFlow fixes its logical devices and its oneDNN setting when it starts,
so every run here is a fresh process, which trains one model per lowering in
turn: ``python distributed_training.py MODE IMPLEMENTATION[,...] OUT_DIR``
writes ``OUT_DIR/IMPLEMENTATION.npz`` for each (``resume`` takes one
lowering and writes by run name).

Modes:
  mirrored        MirroredStrategy over two logical CPUs and one device, from
                  the same initial weights, on 9 samples in global batches of 8
                  (the last batch of 1 leaves one replica empty); writes both
                  results.
  mirrored-bf16   the same under the mixed_bfloat16 policy.
  resume          MirroredStrategy fits backed up by BackupAndRestore: the
                  arguments after OUT_DIR are runs, in order, each
                  ``NAME[:epoch=E|:batch=B]``, backed up in OUT_DIR/NAME. A run
                  with a kill point ends this process (die) right after the
                  E-th epoch ends or the B-th batch (counted from 1 across
                  epochs) is trained; a run without one restores the backup
                  if there is one, trains to the end and writes
                  OUT_DIR/NAME.npz (with the epochs it trained).
  worker-resume   one worker of a resumable MultiWorkerMirroredStrategy run:
                  ``worker-resume IMPLEMENTATION OUT_DIR NAME [epoch=E|batch=B]``
                  (run_resumable_worker).
  worker          one worker of a MultiWorkerMirroredStrategy (TF_CONFIG set by
                  the caller): fit under tf_keras, a ``strategy.run`` loop under
                  Keras 3, which has no multi-worker fit (keras-team/keras#20585);
                  writes its weights and, on the chief, a checkpoint
                  (``IMPLEMENTATION.npz.ckpt``) that a single-device model restores.
"""

import json
import os
import sys

import numpy as np

SAMPLES, GLOBAL_BATCH, EPOCHS, REPLICAS = 9, 8, 2, 2


def build_model(keras, tf_conv3dt, implementation):
    inputs = keras.Input((2, 2, 2, 4))
    # Dense on the channels: its kernel gradient takes the transposed
    # convolution's input gradient as it comes, so a wrongly shaped one shows.
    hidden = keras.layers.Dense(3)(inputs)
    outputs = tf_conv3dt.Conv3DTranspose(
        2, 3, strides=2, padding="same", kernel_regularizer=keras.regularizers.L2(1e-2),
        implementation=implementation, name="up")(hidden)
    outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    return keras.Model(inputs, outputs)


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 2, 2, 2, 4)).astype("float32")
    y = rng.standard_normal((SAMPLES, 4, 4, 4, 2)).astype("float32")
    return x, y


def initial_weights(keras, tf_conv3dt, implementation):
    keras.utils.set_random_seed(1)
    return build_model(keras, tf_conv3dt, implementation).get_weights()


def last_batch_weights():
    """How Keras's fit weighs each example when it splits a global batch over
    the replicas: each replica averages the loss over its own examples and the
    replicas' gradients are summed, divided by their number. A full batch
    splits evenly (weight 1); the last batch of 1 puts its example on one
    replica and none on the other, so it counts 1 / REPLICAS of what one
    device gives it. One device with these example weights is the reference."""
    weights = np.ones((SAMPLES, 1, 1, 1), "float32")  # broadcast over mse's output
    last = SAMPLES % GLOBAL_BATCH
    if last and last < REPLICAS:
        weights[-last:] = 1 / REPLICAS
    return weights


def fit(keras, tf, tf_conv3dt, implementation, strategy, example_weights=None):
    weights = initial_weights(keras, tf_conv3dt, implementation)
    with strategy.scope():
        model = build_model(keras, tf_conv3dt, implementation)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x, y = data()
    examples = (x, y) if example_weights is None else (x, y, example_weights)
    dataset = tf.data.Dataset.from_tensor_slices(examples).batch(GLOBAL_BATCH)
    history = model.fit(dataset, epochs=EPOCHS, verbose=0)
    return model.get_weights(), history.history["loss"]


def run_mirrored(outs, policy=None):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_conv3dt
    from tf_conv3dt._keras import keras
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == REPLICAS
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    for implementation, out in outs.items():
        two, two_loss = fit(keras, tf, tf_conv3dt, implementation, mirrored)
        one, one_loss = fit(keras, tf, tf_conv3dt, implementation, one_device,
                            last_batch_weights())
        np.savez(out, *two, *one, losses=np.array([two_loss, one_loss]))


def die():
    """Ends this process at its kill point with SIGKILL. With VANISH_MARKER
    set, it first writes that file and stops (SIGSTOP), its connections left
    open, for the test to cut its host's link and then kill it: a host that
    vanished without closing anything."""
    import signal

    marker = os.environ.get("VANISH_MARKER")
    if marker:
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after(keras):
    """A callback class: :func:`die` once the ``epoch``-th epoch ends
    (after BackupAndRestore's backup, which comes first) or the ``batch``-th
    batch (counted from 1 across epochs) is trained."""

    class KillAfter(keras.callbacks.Callback):
        def __init__(self, epoch=None, batch=None):
            super().__init__()
            self.epoch, self.batch, self.batches = epoch, batch, 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            if self.batches == self.batch:
                die()

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.epoch:
                die()

    return KillAfter


RESUME_EPOCHS = 4  # two batches each: 8 examples, then 1 (one replica empty)


def run_resumable(implementation, out_dir, runs):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_conv3dt
    from tf_conv3dt._keras import keras

    KillAfter = kill_after(keras)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    weights = initial_weights(keras, tf_conv3dt, implementation)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    for run in runs:
        name, _, kill = run.partition(":")
        with strategy.scope():
            model = build_model(keras, tf_conv3dt, implementation)
            model.set_weights(weights)
            # Momentum: the optimizer's own state has to come back too.
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(out_dir, name))]
        if kill:
            point, _, number = kill.partition("=")
            callbacks.append(KillAfter(**{point: int(number)}))
        history = model.fit(dataset, epochs=RESUME_EPOCHS, verbose=0, callbacks=callbacks)
        np.savez(os.path.join(out_dir, f"{name}.npz"), *model.get_weights(),
                 epochs=np.array(history.epoch))


def run_workers(outs):
    import tensorflow as tf
    import tf_conv3dt
    from tf_conv3dt._keras import keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2
    for implementation, out in outs.items():
        run_worker(tf, keras, tf_conv3dt, strategy, implementation, out)


def run_worker(tf, keras, tf_conv3dt, strategy, implementation, out):
    from tf_conv3dt._keras import LEGACY_KERAS
    weights = initial_weights(keras, tf_conv3dt, implementation)
    x, y = data()
    with strategy.scope():
        model = build_model(keras, tf_conv3dt, implementation)
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(0.05)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    if LEGACY_KERAS:
        model.compile(optimizer=optimizer, loss="mse")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        model.fit(dataset.with_options(options), epochs=EPOCHS, verbose=0)
    else:
        train_loop(tf, keras, strategy, model, optimizer, dataset)
    np.savez(out, *model.get_weights())
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    # Every worker saves (the collective ops need all of them); the chief's
    # copy is the one that counts, the others write to a scratch path.
    checkpoint = tf.train.Checkpoint(model=model)
    path = out + (".ckpt" if task["index"] == 0 else f".scratch{task['index']}")
    checkpoint.write(path)


def train_loop(tf, keras, strategy, model, optimizer, dataset, epochs=range(EPOCHS),
               after_batch=lambda: None, after_epoch=lambda epoch: None):
    """What fit does, as a custom loop: per-replica mean squared error over the
    global batch, plus the regularization losses divided among the replicas;
    ``after_batch()`` after each step, ``after_epoch(epoch)`` after each of ``epochs``."""
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(batch):
        x, y = batch

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                per_example = tf.reduce_mean(tf.square(prediction - y), axis=[1, 2, 3, 4])
                # The global batch, the last one's included: a replica may hold none of it.
                global_batch = tf.distribute.get_replica_context().all_reduce(
                    "sum", tf.cast(tf.shape(x)[0], tf.float32))
                loss = tf.reduce_sum(per_example) / global_batch
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        strategy.run(replica_step, args=(x, y))

    for epoch in epochs:
        for batch in distributed:
            step(batch)
            after_batch()
        after_epoch(epoch)


def run_resumable_worker(implementation, out_dir, name, kill=None):
    """One worker of a resumable MultiWorkerMirroredStrategy run ``name``:
    SGD with momentum for RESUME_EPOCHS epochs, backed up after each in
    OUT_DIR/NAME (BackupAndRestore under tf_keras's fit; a CheckpointManager
    in Keras 3's loop, the chief's there, the other worker's in a scratch
    directory beside it), resuming from a backup where there is one. With a
    ``kill`` point, ``epoch=E`` or ``batch=B`` as :func:`kill_after` takes
    them, it ends there (:func:`die`); otherwise it writes
    OUT_DIR/NAME-worker<index>.npz: its weights and the epochs it trained."""
    import tensorflow as tf
    import tf_conv3dt
    from tf_conv3dt._keras import LEGACY_KERAS, keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    weights = initial_weights(keras, tf_conv3dt, implementation)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    with strategy.scope():
        model = build_model(keras, tf_conv3dt, implementation)
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    backup = os.path.join(out_dir, name)
    point, _, number = (kill or "").partition("=")
    number = int(number or 0)
    trained = []
    if LEGACY_KERAS:
        model.compile(optimizer=optimizer, loss="mse")
        callbacks = [keras.callbacks.BackupAndRestore(backup)]
        if kill:
            callbacks.append(kill_after(keras)(**{point: number}))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        trained = model.fit(dataset.with_options(options), epochs=RESUME_EPOCHS, verbose=0,
                            callbacks=callbacks).epoch
    else:
        with strategy.scope():
            optimizer.build(model.trainable_variables)  # its momentum, restored with the rest
        done = tf.Variable(0)  # epochs trained
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epochs=done)
        manager = tf.train.CheckpointManager(
            checkpoint, backup if index == 0 else f"{backup}-scratch{index}", max_to_keep=1)
        checkpoint.restore(manager.latest_checkpoint)  # None: from the start

        batches = []

        def after_batch():
            batches.append(None)
            if point == "batch" and len(batches) == number:
                die()

        def after_epoch(epoch):
            done.assign(epoch + 1)
            manager.save()  # on every worker: the save is collective
            trained.append(epoch)
            if point == "epoch" and epoch + 1 == number:
                die()

        train_loop(tf, keras, strategy, model, optimizer, dataset,
                   range(int(done.numpy()), RESUME_EPOCHS), after_batch, after_epoch)
    np.savez(os.path.join(out_dir, f"{name}-worker{index}.npz"), *model.get_weights(),
             epochs=np.array(trained))


if __name__ == "__main__":
    mode, implementations, out_dir = sys.argv[1:4]
    if mode == "resume":
        run_resumable(implementations, out_dir, sys.argv[4:])
        sys.exit()
    if mode == "worker-resume":
        run_resumable_worker(implementations, out_dir, *sys.argv[4:6])
        sys.exit()
    outs = {implementation: os.path.join(out_dir, f"{implementation}.npz")
            for implementation in implementations.split(",")}
    if mode == "mirrored":
        run_mirrored(outs)
    elif mode == "mirrored-bf16":
        run_mirrored(outs, "mixed_bfloat16")
    elif mode == "worker":
        run_workers(outs)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
