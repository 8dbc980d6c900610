"""Where TensorFlow's CPU conv3d is wrong: the evidence behind tf_conv3dt/ops/native.py's routing.

The input gradient of ``tf.nn.conv3d_transpose`` is a forward ``tf.nn.conv3d``
of the output gradient. This sweep runs random conv3d configurations through
TensorFlow and a float64 NumPy loop reference and groups the wrong results by
the two rules that lowering routes around:

* ``same-negative-pad``: "SAME" where ``(out - 1) * s + k - in < 0`` on some
  axis (a kernel shorter than its stride), which a transposed convolution's
  "same" with k < s always produces for its gradient;
* ``one-channel-length-1``: one input channel and an output length of 1 on an
  axis with stride > 1 (the oneDNN AVX-512 failure).

Run it under each CPU configuration, e.g.::

    python benchmarks/onednn_conv3d_sweep.py --configs 1000
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/onednn_conv3d_sweep.py --configs 1000
"""

import argparse
import collections
import itertools
import json

import numpy as np
import tensorflow as tf


def np_conv3d(x, w, strides, padding):
    """Cross-correlation as tf.nn.conv3d defines it, in float64."""
    batch, *spatial, _ = x.shape
    kernel = w.shape[:3]
    if padding == "SAME":
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        pads = [max((o - 1) * s + k - n, 0) for o, s, k, n in zip(out, strides, kernel, spatial)]
        x = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)])
    else:
        out = [(n - k) // s + 1 for n, k, s in zip(spatial, kernel, strides)]
    y = np.zeros([batch, *out, w.shape[4]])
    for taps in itertools.product(*map(range, kernel)):
        window = tuple(slice(j, j + (o - 1) * s + 1, s) for j, o, s in zip(taps, out, strides))
        y += np.einsum("ndhwc,cf->ndhwf", x[(slice(None), *window)], w[taps])
    return y


def rules(kernel, strides, padding, channels, spatial, out):
    hits = []
    if padding == "SAME" and any((o - 1) * s + k - n < 0
                                 for o, s, k, n in zip(out, strides, kernel, spatial)):
        hits.append("same-negative-pad")
    if channels == 1 and any(o == 1 and s > 1 for o, s in zip(out, strides)):
        hits.append("one-channel-length-1")
    return tuple(hits) or ("none",)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from tensorflow.python.util import _pywrap_util_port
    rng = np.random.default_rng(args.seed)
    tried, wrong = collections.Counter(), collections.Counter()
    examples = []
    while sum(tried.values()) < args.configs:
        kernel = tuple(int(v) for v in rng.integers(1, 6, 3))
        strides = tuple(int(v) for v in rng.integers(1, 4, 3))
        padding = ("VALID", "SAME")[int(rng.integers(2))]
        channels, filters = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        spatial = tuple(int(v) for v in rng.integers(1, 8, 3))
        if padding == "VALID" and any(n < k for n, k in zip(spatial, kernel)):
            continue
        x = rng.standard_normal((int(rng.integers(1, 4)), *spatial, channels))
        w = rng.standard_normal((*kernel, channels, filters))
        expected = np_conv3d(x, w, strides, padding)
        actual = tf.nn.conv3d(tf.constant(x, tf.float32), tf.constant(w, tf.float32),
                              (1, *strides, 1), padding).numpy()
        key = rules(kernel, strides, padding, channels, spatial, expected.shape[1:4])
        tried[key] += 1
        scale = max(np.abs(expected).max(initial=0), 1)
        if actual.shape != expected.shape or np.abs(actual - expected).max() > 1e-4 * scale:
            wrong[key] += 1
            if len(examples) < 5:
                examples.append(dict(kernel=kernel, strides=strides, padding=padding,
                                     channels=channels, spatial=spatial))
    print(json.dumps({
        "tensorflow": tf.__version__,
        "onednn": bool(_pywrap_util_port.IsMklEnabled()),
        "by_rule": {"+".join(k): {"tried": tried[k], "wrong": wrong[k]} for k in tried},
        "examples": examples,
    }, indent=1))


if __name__ == "__main__":
    main()
