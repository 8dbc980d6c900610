"""Independent references for 3-D transposed convolution.

Written from the definition, not from tf_conv3dt. The NumPy loop reference
scatters every kernel tap into the full output with explicit strides; the
PyTorch one (float64) computes the full output with
``torch.nn.functional.conv_transpose3d``. Both then cut out the window that
``tf.nn.conv3d_transpose`` returns (TF pads a forward "same" convolution by
max(full - out, 0), the smaller half first), zero beyond the full output.
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


def tf_window(spatial, kernel_size, strides, padding, output_padding=None,
              dilation_rate=(1, 1, 1), output_shape=None):
    """Per axis, the (start, length) of TF's output within the full output."""
    window = []
    for axis in range(3):
        n, k, s, d = spatial[axis], kernel_size[axis], strides[axis], dilation_rate[axis]
        if output_shape is not None:
            length = output_shape[axis]
        else:
            op = None if output_padding is None else output_padding[axis]
            length = keras_output_length(n, k, s, padding, op, d)
        total = (n - 1) * s + (k - 1) * d + 1
        start = 0 if padding == "valid" else max(total - length, 0) // 2
        window.append((start, length))
    return window


def np_conv3d_transpose(x, kernel, bias=None, strides=(1, 1, 1), padding="valid",
                        output_padding=None, dilation_rate=(1, 1, 1),
                        data_format="channels_last", output_shape=None, groups=1):
    """The loop reference; ``groups`` > 1 runs it on each group of channels
    (kernel ``(kd, kh, kw, filters // groups, in)``) and concatenates."""
    if groups > 1:
        axis = 1 if data_format == "channels_first" else 4
        biases = [None] * groups if bias is None else np.split(np.asarray(bias), groups)
        return np.concatenate([
            np_conv3d_transpose(xg, kg, bg, strides, padding, output_padding, dilation_rate,
                                data_format, output_shape)
            for xg, kg, bg in zip(np.split(np.asarray(x), groups, axis),
                                  np.split(np.asarray(kernel), groups, 4), biases)], axis)
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

    window = tf_window(spatial, sizes, strides, padding, output_padding, dilation_rate,
                       output_shape)
    out = np.zeros([batch, *(length for _, length in window), filters])
    source, target = [], []
    for (start, length), total in zip(window, full_shape):
        keep = min(length, total - start)
        source.append(slice(start, start + keep))
        target.append(slice(0, keep))
    out[(slice(None), *target)] = full[(slice(None), *source)]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    if data_format == "channels_first":
        out = out.transpose(0, 4, 1, 2, 3)
    return out


def np_conv3d_transpose_with_gradients(x, kernel, cotangent, strides=(1, 1, 1),
                                       padding="valid", output_padding=None,
                                       dilation_rate=(1, 1, 1),
                                       data_format="channels_last", output_shape=None,
                                       groups=1):
    """The NumPy loop reference's output and the gradients of
    ``sum(output * cotangent)``: the cotangent is placed into the full output
    (zero outside TF's window) and gathered back tap by tap, the adjoint of
    the scatter in :func:`np_conv3d_transpose`.

    ``cotangent`` None skips the gradients (returns the output alone), as
    :func:`torch_conv3d_transpose_with_gradients` does.
    """
    if cotangent is None:
        return np_conv3d_transpose(x, kernel, None, strides, padding, output_padding,
                                   dilation_rate, data_format, output_shape, groups)
    if groups > 1:  # each group alone; outputs and input gradients by channel, kernels by input
        axis = 1 if data_format == "channels_first" else 4
        parts = [np_conv3d_transpose_with_gradients(
                     xg, kg, gg, strides, padding, output_padding, dilation_rate, data_format,
                     output_shape)
                 for xg, kg, gg in zip(np.split(np.asarray(x), groups, axis),
                                       np.split(np.asarray(kernel), groups, 4),
                                       np.split(np.asarray(cotangent), groups, axis))]
        return (np.concatenate([p[0] for p in parts], axis),
                np.concatenate([p[1] for p in parts], axis),
                np.concatenate([p[2] for p in parts], 4))
    args = (strides, padding, output_padding, dilation_rate, "channels_last", output_shape)
    x = np.asarray(x, np.float64)
    g = np.asarray(cotangent, np.float64)
    if data_format == "channels_first":
        x, g = x.transpose(0, 2, 3, 4, 1), g.transpose(0, 2, 3, 4, 1)
    kernel = np.asarray(kernel, np.float64)
    out = np_conv3d_transpose(x, kernel, None, *args)
    batch, *spatial, _ = x.shape
    sizes = kernel.shape[:3]
    full_shape = [(n - 1) * s + (k - 1) * d + 1
                  for n, k, s, d in zip(spatial, sizes, strides, dilation_rate)]
    g_full = np.zeros([batch, *full_shape, kernel.shape[3]])
    window = tf_window(spatial, sizes, strides, padding, output_padding, dilation_rate,
                       output_shape)
    keep = [min(length, total - start) for (start, length), total in zip(window, full_shape)]
    g_full[(slice(None), *(slice(start, start + k) for (start, _), k in zip(window, keep)))] = \
        g[(slice(None), *(slice(0, k) for k in keep))]
    dx, dk = np.zeros_like(x), np.zeros_like(kernel)
    for taps in itertools.product(*map(range, sizes)):
        reached = g_full[(slice(None), *(
            slice(j * d, j * d + (n - 1) * s + 1, s)
            for j, n, s, d in zip(taps, spatial, strides, dilation_rate)))]
        dx += np.einsum("ndhwf,fc->ndhwc", reached, kernel[taps])
        dk[taps] = np.einsum("ndhwf,ndhwc->fc", reached, x)
    if data_format == "channels_first":
        out, dx = out.transpose(0, 4, 1, 2, 3), dx.transpose(0, 4, 1, 2, 3)
    return out, dx, dk


def torch_conv3d_transpose_with_gradients(x, kernel, cotangent, strides=(1, 1, 1),
                                          padding="valid", output_padding=None,
                                          dilation_rate=(1, 1, 1),
                                          data_format="channels_last", output_shape=None,
                                          groups=1):
    """PyTorch float64: the output, and the gradients of ``sum(output * cotangent)``
    with respect to ``x`` and ``kernel``, all in TF's layouts.

    ``cotangent`` None skips the gradients (returns the output alone).
    """
    import torch

    x = torch.tensor(np.asarray(x, np.float64))
    if data_format == "channels_last":
        x = x.permute(0, 4, 1, 2, 3)
    x = x.detach().requires_grad_(True)
    # TF's (kd, kh, kw, filters // groups, in) is PyTorch's (in, filters // groups, kd, kh, kw).
    weight = torch.tensor(np.asarray(kernel, np.float64)).permute(4, 3, 0, 1, 2)
    weight = weight.detach().requires_grad_(True)
    window = tf_window(tuple(x.shape[2:]), tuple(weight.shape[2:]), strides, padding,
                       output_padding, dilation_rate, output_shape)
    full = torch.nn.functional.conv_transpose3d(x, weight, stride=tuple(strides),
                                                dilation=tuple(dilation_rate), groups=groups)
    pads = []
    for (start, length), total in zip(reversed(window), reversed(full.shape[2:])):
        pads += [-start, length - (total - start)]  # negative pads crop
    out = torch.nn.functional.pad(full, pads)
    result = out.permute(0, 2, 3, 4, 1) if data_format == "channels_last" else out
    if cotangent is None:
        return result.detach().numpy()
    torch.sum(result * torch.tensor(np.asarray(cotangent, np.float64))).backward()
    dx = x.grad.permute(0, 2, 3, 4, 1) if data_format == "channels_last" else x.grad
    return result.detach().numpy(), dx.numpy(), weight.grad.permute(2, 3, 4, 1, 0).numpy()


def assert_close(actual, expected, rel=1e-5):
    """Max abs error within ``rel`` of the largest reference magnitude."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(actual - expected).max(initial=0.0)
    assert error <= rel * scale, f"max abs error {error:.3g} > {rel} * {scale:.3g}"
