"""An independent, slow NumPy reference for 3-D transposed convolution.

Written from the definition, not from tf_conv3dt: every kernel tap scatters
its contribution into the full output with explicit strides, then the window
that ``tf.nn.conv3d_transpose`` returns is cut out (TF pads a forward "same"
convolution by max(full - out, 0), the smaller half first).
"""

import itertools

import numpy as np


def keras_output_length(n, k, s, padding, output_padding, d):
    """Keras's documented output length (conv_utils.deconv_output_length)."""
    k = (k - 1) * d + 1
    if output_padding is None:
        return n * s + max(k - s, 0) if padding == "valid" else n * s
    pad = k // 2 if padding == "same" else 0
    return (n - 1) * s + k - 2 * pad + output_padding


def np_conv3d_transpose(x, kernel, bias=None, strides=(1, 1, 1), padding="valid",
                        output_padding=None, dilation_rate=(1, 1, 1),
                        data_format="channels_last", output_shape=None):
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 4, 1)
    batch, *spatial, _ = x.shape
    kd, kh, kw, filters, _ = kernel.shape
    sizes = (kd, kh, kw)
    full_shape = [(n - 1) * s + (k - 1) * d + 1
                  for n, k, s, d in zip(spatial, sizes, strides, dilation_rate)]
    full = np.zeros([batch, *full_shape, filters])
    for taps in itertools.product(range(kd), range(kh), range(kw)):
        contribution = np.einsum("ndhwc,fc->ndhwf", x, kernel[taps])
        window = tuple(
            slice(j * d, j * d + (n - 1) * s + 1, s)
            for j, n, s, d in zip(taps, spatial, strides, dilation_rate)
        )
        full[(slice(None), *window)] += contribution

    lengths = []
    for axis in range(3):
        if output_shape is not None:
            lengths.append(output_shape[axis])
        else:
            op = None if output_padding is None else output_padding[axis]
            lengths.append(keras_output_length(spatial[axis], sizes[axis], strides[axis],
                                               padding, op, dilation_rate[axis]))
    out = np.zeros([batch, *lengths, filters])
    source, target = [], []
    for length, total in zip(lengths, full_shape):
        start = 0 if padding == "valid" else max(total - length, 0) // 2
        keep = min(length, total - start)
        source.append(slice(start, start + keep))
        target.append(slice(0, keep))
    out[(slice(None), *target)] = full[(slice(None), *source)]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    if data_format == "channels_first":
        out = out.transpose(0, 4, 1, 2, 3)
    return out


def assert_close(actual, expected, rel=1e-5):
    """Max abs error within ``rel`` of the largest reference magnitude."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(actual - expected).max(initial=0.0)
    assert error <= rel * scale, f"max abs error {error:.3g} > {rel} * {scale:.3g}"
