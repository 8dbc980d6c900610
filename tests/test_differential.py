"""Differential tests: every implementation against an independent reference.

Random configurations (seeded; each test id carries its seed) over kernel
sizes 1-5 per axis, strides 1-3, dilation 1-3 (with stride 1), both paddings,
output_padding, requested output sizes across the whole legal range, both
data formats, batch 0-3, channels 1-4, spatial sizes 1-7 and groups (one, a
common divisor of the channels and filters, or depthwise). Each is checked
for every lowering (the named cases for "auto" too) and for one of the
``SPLITS``, a lowering's forward with another's gradient, in turn, eagerly and through a
trace with unknown batch and spatial sizes, and for two in five
configurations (every one with batch 0)
through a trace with only the batch unknown, as in a Keras model's graph:
the output, and the gradients of ``sum(output * cotangent)`` with respect to
the input and the kernel, within 1e-4 of the reference's largest magnitude.
Three in ten configurations with finite inputs add a bias and a fused
activation (``ops.FUSED_ACTIVATIONS``), and check the bias's gradient too.
A gradient that comes back ``None`` (an output that does not depend on an
argument has a zero gradient) fails as a shape mismatch. A fifth of the
configurations put Inf or NaN into the input: the non-finite outputs must
then be exactly the reference's, and the input gradient (which does not
depend on the input's values) still matches.

The reference is PyTorch (float64) where it is installed, the NumPy loop
reference otherwise. ``TF_CONV3DT_DIFFERENTIAL_CONFIGS`` and
``TF_CONV3DT_DIFFERENTIAL_SEED`` change how many configurations are drawn and
from which seed.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, given, settings, strategies as st

import tf_conv3dt
from tf_conv3dt import ops, shapes
from tf_conv3dt.ops.lowerings import gemm as gemm_lowering
import reference
import lowerings
from lowerings import LOWERINGS, SPLITS
from markers import op_only, smoke

CONFIGS = int(os.environ.get("TF_CONV3DT_DIFFERENTIAL_CONFIGS", 64))
SEED = int(os.environ.get("TF_CONV3DT_DIFFERENTIAL_SEED", "20261127"))
# "auto" runs one of the lowerings, the rule's choice with tuning off (as
# here), and traces the same graph: the named cases run it by name too.
IMPLEMENTATIONS = [*LOWERINGS, "auto"]

try:
    import torch  # noqa: F401
    REFERENCE = reference.torch_conv3d_transpose_with_gradients
except ImportError:
    REFERENCE = reference.np_conv3d_transpose_with_gradients


def draw_config(seed):
    """One random configuration, reproducible from its seed."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 6, 3))
    while np.prod(kernel) > 27:  # a GEMM trace grows with the taps: keep CI's time in bounds
        kernel = tuple(int(k) for k in rng.integers(1, 6, 3))
    if rng.random() < 0.25:
        strides, dilation = (1, 1, 1), tuple(int(d) for d in rng.integers(1, 4, 3))
    else:
        strides, dilation = tuple(int(s) for s in rng.integers(1, 4, 3)), (1, 1, 1)
    padding = ("valid", "same")[int(rng.integers(2))]
    spatial = tuple(int(n) for n in rng.integers(1, 8, 3))
    output_padding = output_shape = None
    mode = rng.random()
    if mode < 0.3:
        output_shape = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in (
            shapes.output_length_range(n, k, s, padding, d)
            for n, k, s, d in zip(spatial, kernel, strides, dilation)))
    elif mode < 0.55 and max(strides) > 1:
        output_padding = tuple(int(rng.integers(0, s)) for s in strides)
    try:
        shapes.check_conv_arguments(kernel, strides, padding, dilation, output_padding)
    except ValueError:  # "same" with an even kernel needs output_padding >= 1
        output_padding = None
    batch = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))
    non_finite = None
    if batch and rng.random() < 0.2:
        non_finite = [float(v) for v in rng.choice([np.nan, np.inf, -np.inf],
                                                   int(rng.integers(1, 3)))]
    config = dict(kernel_size=kernel, strides=strides, dilation_rate=dilation,
                  padding=padding, output_padding=output_padding, output_shape=output_shape,
                  data_format=("channels_last", "channels_first")[int(rng.integers(2))],
                  batch=batch, channels=int(rng.integers(1, 5)),
                  filters=int(rng.integers(1, 5)), spatial=spatial, non_finite=non_finite)
    config["batch_only_trace"] = batch == 0 or rng.random() < 0.3
    # A bias and a fused activation (drawn last: the draws above stay as they were).
    config["epilogue"] = None
    if not non_finite and rng.random() < 0.3:
        config["epilogue"] = str(rng.choice(ops.FUSED_ACTIVATIONS))
    # Groups, where the channels and filters share a divisor: one, or any
    # common divisor (the channel count itself is depthwise). Drawn last too.
    common = [g for g in range(2, 5) if not config["channels"] % g and not config["filters"] % g]
    config["groups"] = int(rng.choice(common)) if common and rng.random() < 0.6 else 1
    return config


def modes(config):
    """How a configuration is called: eagerly, traced with every size unknown,
    and, where the configuration says so, traced with only the batch unknown."""
    return ("eager", "traced", "batch-traced")[:3 if config["batch_only_trace"] else 2]


def _inputs(config, seed):
    rng = np.random.default_rng([seed, 1])
    channels_first = config["data_format"] == "channels_first"
    shape = ((config["batch"], config["channels"], *config["spatial"]) if channels_first
             else (config["batch"], *config["spatial"], config["channels"]))
    x = rng.standard_normal(shape).astype("float32")
    for value in config["non_finite"] or ():
        x[tuple(int(rng.integers(n)) for n in shape)] = value
    kernel = rng.standard_normal(
        (*config["kernel_size"], config["filters"] // config.get("groups", 1),
         config["channels"])).astype("float32")
    return x, kernel, rng


def _ours(x, kernel, bias, cotangent, config, implementation, mode):
    """Output and gradients (input, kernel, and bias where there is one) from
    tf_conv3dt, called as ``mode`` (:func:`modes`)."""
    implementation = lowerings.implementation(implementation)
    arguments = _arguments(config)

    def run(x, kernel, bias, cotangent):
        arguments["bias"] = None if bias.shape[0] == 0 else bias
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = tf_conv3dt.conv3d_transpose(x, kernel, implementation=implementation,
                                            activation=config.get("epilogue"), **arguments)
            loss = tf.reduce_sum(y * cotangent)
        gradients = tape.gradient(loss, [x, kernel, bias])
        return (y, *gradients[:2], gradients[2] if arguments["bias"] is not None else bias)

    bias = np.zeros(0, np.float32) if bias is None else bias
    if mode == "eager":
        return [t.numpy() for t in run(tf.constant(x), tf.constant(kernel),
                                       tf.constant(bias), tf.constant(cotangent))]
    if mode == "batch-traced":
        spec, cotangent_spec = [None, *x.shape[1:]], [None, *cotangent.shape[1:]]
    else:
        channel_axis = 1 if config["data_format"] == "channels_first" else 4
        spec, cotangent_spec = [None] * 5, [None] * 5
        spec[channel_axis] = config["channels"]
    function = tf.function(run).get_concrete_function(
        tf.TensorSpec(spec), tf.TensorSpec(kernel.shape), tf.TensorSpec(bias.shape),
        tf.TensorSpec(cotangent_spec))
    return [t.numpy() for t in function(tf.constant(x), tf.constant(kernel),
                                        tf.constant(bias), tf.constant(cotangent))]


def _assert_matches(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    finite = np.isfinite(expected)
    spurious = np.argwhere(~np.isfinite(actual) & finite)
    missing = np.argwhere(np.isfinite(actual) & ~finite)
    assert not len(spurious) and not len(missing), (
        f"{what}: {len(spurious)} non-finite values the reference does not have "
        f"(first at {spurious[:1].tolist()}), {len(missing)} finite where it is not")
    scale = max(np.abs(expected[finite]).max(initial=0.0), 1e-30)
    error = np.abs(actual[finite] - expected[finite]).max(initial=0.0)
    assert error <= 1e-4 * scale, f"{what}: max abs error {error:.3g}, scale {scale:.3g}"


# Where each fused activation's slope changes.
KINKS = {"linear": (), "relu": (0.0,), "relu6": (0.0, 6.0)}


def _epilogue_reference(products, bias, activation, cotangent, channel_axis):
    """The activated output of ``products + bias``, and the cotangent of the
    products: zero where the activation is flat, and where the products lie
    within float32 rounding of a kink, whose side float32 may not agree on."""
    shape = [1] * products.ndim
    shape[channel_axis] = -1
    pre = products + bias.reshape(shape)
    kinks = KINKS[activation]
    y = pre if activation == "linear" else np.clip(pre, 0, 6 if activation == "relu6" else None)
    slope = np.ones_like(pre) if activation == "linear" else (pre > 0) & (
        pre < 6 if activation == "relu6" else True)
    near = np.zeros(pre.shape, bool)
    for kink in kinks:
        near |= np.abs(pre - kink) < 1e-3 * max(np.abs(pre).max(initial=0.0), 1.0)
    cotangent = np.where(near, 0.0, cotangent).astype("float32")
    return y, cotangent, cotangent * slope


def _arguments(config):
    """The call's arguments of ``config``, as tf_conv3dt and the references take them."""
    arguments = {k: config[k] for k in ("strides", "padding", "output_padding",
                                        "dilation_rate", "data_format", "output_shape")}
    arguments["groups"] = config.get("groups", 1)
    return arguments


def check_config(config, seed, implementations=IMPLEMENTATIONS):
    x, kernel, rng = _inputs(config, seed)
    arguments = _arguments(config)
    expected_y = REFERENCE(x, kernel, None, **arguments)
    bias, activation = None, config.get("epilogue")
    channel_axis = 1 if config["data_format"] == "channels_first" else 4
    if activation:
        bias = rng.standard_normal(config["filters"]).astype("float32")
    cotangent = rng.standard_normal(expected_y.shape).astype("float32")
    products_cotangent = cotangent
    if activation:
        expected_y, cotangent, products_cotangent = _epilogue_reference(
            expected_y, bias, activation, cotangent, channel_axis)
    expected = REFERENCE(x, kernel, products_cotangent, **arguments)
    for implementation in implementations:
        for mode in modes(config):
            y, dx, dkernel, dbias = _ours(x, kernel, bias, cotangent, config, implementation,
                                          mode)
            where = f"seed {seed}, {implementation}, {mode}, {config}"
            _assert_matches(y, expected_y, f"output ({where})")
            _assert_matches(dx, expected[1], f"input gradient ({where})")
            if not config["non_finite"]:  # else NaN * 0 in the crop's gradient
                _assert_matches(dkernel, expected[2], f"kernel gradient ({where})")
            if activation:
                axes = tuple(a for a in range(5) if a != channel_axis)
                _assert_matches(dbias, products_cotangent.astype(np.float64).sum(axes),
                                f"bias gradient ({where})")


@op_only
@smoke
@pytest.mark.parametrize("seed", [SEED + i for i in range(CONFIGS)],
                         ids=lambda seed: f"seed={seed}")
def test_random_configuration_matches_reference(seed):
    check_config(draw_config(seed), seed, implementations(seed))


@op_only
@pytest.mark.parametrize("seed", [SEED - 1 - i for i in range(max(CONFIGS // 4, 2))],
                         ids=lambda seed: f"seed={seed}")
def test_gemm_taps_one_at_a_time_match_reference(seed, monkeypatch):
    """The GEMM lowering's taps go one at a time, forward and gradient, only
    where a product is ``CHAINED_PRODUCT_BYTES`` or more, far larger than
    these configurations': here from the smallest product (seeds below the
    random configurations', so that none repeats)."""
    monkeypatch.setattr(gemm_lowering, "CHAINED_PRODUCT_BYTES", 0)
    check_config(draw_config(seed), seed, ["gemm"])


def implementations(seed):
    """What a random configuration is checked with: every lowering registered
    now (one a test registers too), and one of the ``SPLITS`` in turn."""
    return [*lowerings.names(), SPLITS[seed % len(SPLITS)]]


def test_references_agree_with_each_other():
    """The PyTorch and NumPy references, written independently, agree."""
    pytest.importorskip("torch", reason="compares the PyTorch reference with NumPy's")
    for seed in range(SEED, SEED + 12):
        config = draw_config(seed)
        x, kernel, rng = _inputs(config, seed)
        x[~np.isfinite(x)] = 1.0
        arguments = _arguments(config)
        y = reference.np_conv3d_transpose(x, kernel, **arguments)
        cotangent = rng.standard_normal(y.shape)
        for a, b in zip(reference.torch_conv3d_transpose_with_gradients(
                            x, kernel, cotangent, **arguments),
                        reference.np_conv3d_transpose_with_gradients(
                            x, kernel, cotangent, **arguments)):
            reference.assert_close(a, b, rel=1e-12)


@op_only
@pytest.mark.parametrize("config", [
    pytest.param(dict(kernel_size=(3, 3, 3), strides=(2, 2, 2), padding="same",
                      output_padding=(1, 1, 1), dilation_rate=(1, 1, 1), output_shape=None,
                      data_format="channels_first", batch=0, channels=4, filters=8,
                      spatial=(3, 2, 4), non_finite=None, batch_only_trace=True, groups=4,
                      epilogue="relu"),
                 id="depthwise-k3s2-same-cf-batch0"),
    pytest.param(dict(kernel_size=(3, 2, 3), strides=(1, 1, 1), padding="valid",
                      output_padding=None, dilation_rate=(2, 1, 2), output_shape=None,
                      data_format="channels_last", batch=2, channels=4, filters=2,
                      spatial=(4, 3, 5), non_finite=[float("nan")], batch_only_trace=False,
                      groups=2),
                 id="groups2-dilated-nan-stays-in-its-group"),
])
def test_grouped_and_depthwise_layers_match_reference(config):
    """Named grouped cases beside the random draws: depthwise with an empty
    batch, and a NaN that must reach only its own group's outputs."""
    check_config(config, SEED, LOWERINGS)


# The reproductions of the wrong results TensorFlow's kernels gave, as named cases.
REGRESSIONS = [
    pytest.param(dict(kernel_size=(5, 4, 3), strides=(2, 1, 2), padding="valid",
                      output_padding=None, dilation_rate=(1, 1, 1), output_shape=None,
                      data_format="channels_last", batch=3, channels=3, filters=1,
                      spatial=(2, 6, 1), non_finite=None, batch_only_trace=False),
                 id="onednn-garbage-input-gradient-one-filter-length-1"),
    pytest.param(dict(kernel_size=(3, 3, 3), strides=(2, 2, 1), padding="valid",
                      output_padding=None, dilation_rate=(1, 1, 1), output_shape=None,
                      data_format="channels_last", batch=0, channels=2, filters=4,
                      spatial=(3, 3, 3), non_finite=None, batch_only_trace=True),
                 id="onednn-empty-batch-input-gradient-shape"),
    pytest.param(dict(kernel_size=(3, 3, 3), strides=(1, 1, 1), padding="valid",
                      output_padding=None, dilation_rate=(2, 2, 2), output_shape=None,
                      data_format="channels_last", batch=1, channels=1, filters=1,
                      spatial=(5, 5, 5), non_finite=[float("nan")], batch_only_trace=False),
                 id="dilated-kernel-nan-spread"),
    pytest.param(dict(kernel_size=(3, 2, 3), strides=(1, 1, 1), padding="same",
                      output_padding=None, dilation_rate=(2, 3, 1), output_shape=None,
                      data_format="channels_first", batch=2, channels=2, filters=3,
                      spatial=(4, 5, 3), non_finite=[float("inf")], batch_only_trace=False),
                 id="dilated-kernel-inf-spread"),
    # A Keras model's graph: every size known but the batch. Grappler then
    # dropped the reshape that gave oneDNN's gradient its shape back.
    pytest.param(dict(kernel_size=(3, 3, 3), strides=(2, 2, 2), padding="same",
                      output_padding=None, dilation_rate=(1, 1, 1), output_shape=None,
                      data_format="channels_last", batch=0, channels=3, filters=2,
                      spatial=(2, 2, 2), non_finite=None, batch_only_trace=True),
                 id="onednn-empty-batch-only-batch-unknown"),
    # Every tap misses the "same" window on the last axis: the output depends
    # on neither argument, whose gradients are zeros (gemm once gave None).
    pytest.param(dict(kernel_size=(1, 1, 2), strides=(1, 1, 1), padding="same",
                      output_padding=None, dilation_rate=(1, 1, 2), output_shape=None,
                      data_format="channels_last", batch=2, channels=3, filters=4,
                      spatial=(1, 1, 1), non_finite=None, batch_only_trace=True),
                 id="no-tap-reaches-the-output"),
    pytest.param(dict(kernel_size=(5, 3, 2), strides=(1, 1, 1), padding="same",
                      output_padding=None, dilation_rate=(3, 2, 2), output_shape=None,
                      data_format="channels_first", batch=1, channels=2, filters=3,
                      spatial=(4, 6, 1), non_finite=None, batch_only_trace=False),
                 id="no-tap-reaches-the-output-channels-first"),
]


@op_only
@smoke
@pytest.mark.parametrize("config", REGRESSIONS)
def test_regression(config):
    check_config(config, seed=0)


def _reaches_nothing(n, k, d, start, length):
    """Whether no tap of a stride-1 axis lands in the window [start, start + length)."""
    return not any(start <= i + j * d < start + length for i in range(n) for j in range(k))


@st.composite
def unreached_configs(draw):
    """Stride-1 "same" configurations, dilated, whose taps all miss the output
    window on at least one axis, so that the output depends on neither input."""
    axes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3))
    spatial, kernel, dilation = map(tuple, zip(*draw(st.tuples(axes, axes, axes))))
    window = reference.tf_window(spatial, kernel, (1, 1, 1), "same", None, dilation)
    assume(any(_reaches_nothing(n, k, d, *w)
               for n, k, d, w in zip(spatial, kernel, dilation, window)))
    batch = draw(st.integers(0, 2))
    return dict(kernel_size=kernel, strides=(1, 1, 1), padding="same", output_padding=None,
                dilation_rate=dilation, output_shape=None,
                data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
                batch=batch, channels=draw(st.integers(1, 3)), filters=draw(st.integers(1, 3)),
                spatial=spatial, non_finite=[float("inf")] if batch and draw(st.booleans())
                else None, batch_only_trace=draw(st.booleans()))


@op_only
@settings(max_examples=6, deadline=None)
@given(config=unreached_configs(), seed=st.integers(0, 2**31))
def test_output_that_no_tap_reaches_has_zero_gradients(config, seed):
    """Every lowering's output there is zeros (an Inf input included), and both
    gradients are zeros, never None."""
    check_config(config, seed, LOWERINGS)


@op_only
def test_the_deprecated_int8_flags_warn_and_run_gemm_int8():
    """one_product_per_phase (and fake_quantize_kernel with it) still run
    GEMM's int8 form, with a DeprecationWarning that names its replacement:
    the same graph, so the same numbers, as implementation="gemm_int8" (and
    its products' weights on the int8 grid)."""
    from tf_conv3dt.ops.lowerings import gemm_int8

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 3, 2)).astype("float32")
    kernel = rng.standard_normal((3, 3, 2, 4, 2)).astype("float32")
    arguments = dict(strides=(2, 2, 1), padding="same", bias=np.ones(4, "float32"),
                     activation="relu")
    for flags, replacement in (({}, "gemm_int8"),
                               ({"fake_quantize_kernel": True}, gemm_int8.ON_THE_INT8_GRID)):
        with pytest.warns(DeprecationWarning, match="implementation='gemm_int8'") as caught:
            y = ops.conv3d_transpose(x, kernel, one_product_per_phase=True, **flags,
                                     **arguments)
        assert caught[0].filename == __file__  # the caller's line, not the library's
        np.testing.assert_array_equal(
            y, ops.conv3d_transpose(x, kernel, implementation=replacement, **arguments))
    with pytest.warns(DeprecationWarning, match="force 'gemm_int8'"):
        with ops.forced_implementation("gemm", one_product_per_phase=True):
            forced = ops.conv3d_transpose(x, kernel, **arguments)
    np.testing.assert_array_equal(
        forced, ops.conv3d_transpose(x, kernel, implementation="gemm_int8", **arguments))
    expected = reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 1), padding="same")
    reference.assert_close(forced, np.maximum(expected + 1, 0))


def test_one_nan_voxel_reaches_only_its_footprint():
    """One NaN through a dilated all-ones kernel reaches its 27 taps' outputs,
    as in PyTorch; the zero-dilated kernel once gave 125 NaN outputs."""
    x = np.zeros((1, 5, 5, 5, 1), np.float32)
    x[0, 2, 2, 2, 0] = np.nan
    for implementation in ("native", "gemm", "subpixel", "auto"):
        layer = tf_conv3dt.Conv3DTranspose(1, 3, dilation_rate=2, kernel_initializer="ones",
                                           implementation=implementation)
        assert int(np.isnan(layer(x).numpy()).sum()) == 27, implementation


@pytest.mark.skipif(os.environ.get("TF_CONV3DT_DIFFERENTIAL_CHILD") == "1",
                    reason="already the run under the other oneDNN setting")
@op_only
def test_under_the_other_onednn_setting():
    """The native path depends on whether TensorFlow runs its oneDNN kernels:
    run 8 more random configurations (those after this run's, so that no two
    of a run's configurations are the same) and the named regressions again in
    a process with the other setting."""
    onednn = ops.cpu_configuration() == "onednn"
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0" if onednn else "1",
               TF_CONV3DT_DIFFERENTIAL_CHILD="1", TF_CONV3DT_DIFFERENTIAL_CONFIGS="8",
               TF_CONV3DT_DIFFERENTIAL_SEED=str(SEED + CONFIGS), TF_CPP_MIN_LOG_LEVEL="2")
    probe = subprocess.run(
        [sys.executable, "-c",
         "from tf_conv3dt import ops; print(ops.cpu_configuration() == 'onednn')"],
        env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split()[-1] == str(not onednn)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "test_random_configuration or test_regression"],
        env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
