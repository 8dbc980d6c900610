"""One lowering's forward pass with another's gradient: what tuned "auto" runs where they differ."""

import tensorflow as tf


def with_gradient_of(forward, gradient, x, kernel):
    """``forward(x, kernel)``, differentiated as ``gradient(x, kernel,
    upstream)`` says: another lowering's ``Lowering.gradient``.

    Every lowering computes the same function, so any one's gradient is the
    gradient of the others: measured, the fastest forward pass and the
    fastest gradient may come from different lowerings (on oneDNN, the
    sub-pixel forward and the native op's gradient: docs/performance.md).

    That gradient traces its lowering's forward pass inside a tape to
    differentiate it. No lowering's gradient reads its forward's output (each
    is linear in ``x`` and in ``kernel``), so inside a ``tf.function`` with
    a static batch TensorFlow prunes that pass and only the gradient runs.
    With the batch unknown at trace time (a Keras model's graph), the
    gradients of its slices and pads read their inputs' shapes, and the part
    of the pass before them runs too; called eagerly, all of it does.
    Tuning times a pair as the call traces it before it runs one
    (``tuning.measure_split``).
    """

    @tf.custom_gradient
    def split(x, kernel):
        return forward(x, kernel), lambda dy: gradient(x, kernel, dy)

    return split(x, kernel)
