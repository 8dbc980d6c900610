"""One lowering's forward pass with another's gradient: what tuned "auto" runs where they differ."""

import tensorflow as tf


def with_gradient_of(forward, gradient, x, kernel):
    """``forward(x, kernel)``, differentiated as ``gradient(x, kernel)``.

    Every lowering computes the same function, so any one's gradient is the
    gradient of the others: measured, the fastest forward pass and the
    fastest gradient often come from different lowerings (the sub-pixel
    forward with the native op's gradient on oneDNN, docs/performance.md).

    The gradient traces ``gradient``'s forward pass inside a tape to
    differentiate it. No lowering's gradient reads its forward's output (each
    is linear in ``x`` and in ``kernel``), so inside a ``tf.function`` (a
    Keras training step) TensorFlow prunes that pass and only the gradient
    runs; called eagerly, it runs too.
    """

    @tf.custom_gradient
    def split(x, kernel):
        def vjp(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = gradient(x, kernel)
            dx, dkernel = tape.gradient(y, [x, kernel], output_gradients=dy,
                                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return dx, dkernel

        return forward(x, kernel), vjp

    return split(x, kernel)
