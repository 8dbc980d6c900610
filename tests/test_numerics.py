"""Values against the NumPy reference, Keras's own layer, and by hand."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

import cpu_pin
import tf_conv3dt
from tf_conv3dt._keras import keras
import lowerings
from lowerings import LOWERINGS
from markers import cpu_sensitive, op_only
from reference import assert_close, np_conv3d_transpose


# Kernel 1-5 (non-cubic too), strides 1-3 per axis, both paddings,
# output_padding, dilation, both formats, bias or not, batch 1-3.
# kernel, strides, dilation, padding, output_padding, channels_..., bias, batch
_SWEEP_ROWS = [
    ((1, 1, 1), (1, 1, 1), (1, 1, 1), "valid", None, "last", True, 1),
    ((1, 1, 1), (2, 2, 2), (1, 1, 1), "same", None, "first", False, 2),
    ((1, 1, 1), (3, 3, 3), (1, 1, 1), "valid", None, "last", True, 3),
    ((1, 1, 1), (1, 2, 3), (1, 1, 1), "same", (0, 1, 1), "first", True, 1),
    ((1, 1, 1), (3, 1, 2), (1, 1, 1), "valid", None, "last", True, 2),
    ((2, 2, 2), (1, 1, 1), (1, 1, 1), "same", None, "first", False, 3),
    ((2, 2, 2), (2, 2, 2), (1, 1, 1), "valid", (1, 1, 1), "last", True, 1),
    ((2, 2, 2), (3, 3, 3), (1, 1, 1), "same", None, "first", True, 2),
    ((2, 2, 2), (1, 2, 3), (1, 1, 1), "valid", None, "last", True, 3),
    ((2, 2, 2), (3, 1, 2), (1, 1, 1), "same", None, "first", False, 1),
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), "valid", None, "last", True, 2),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), "same", None, "first", True, 3),
    ((3, 3, 3), (3, 3, 3), (1, 1, 1), "valid", (0, 0, 0), "last", True, 1),
    ((3, 3, 3), (1, 2, 3), (1, 1, 1), "same", None, "first", False, 2),
    ((3, 3, 3), (3, 1, 2), (1, 1, 1), "valid", None, "last", True, 3),
    ((4, 4, 4), (1, 1, 1), (1, 1, 1), "same", None, "first", True, 1),
    ((4, 4, 4), (2, 2, 2), (1, 1, 1), "valid", None, "last", True, 2),
    ((4, 4, 4), (3, 3, 3), (1, 1, 1), "same", None, "first", False, 3),
    ((4, 4, 4), (1, 2, 3), (1, 1, 1), "valid", (0, 0, 2), "last", True, 1),
    ((4, 4, 4), (3, 1, 2), (1, 1, 1), "same", None, "first", True, 2),
    ((5, 5, 5), (1, 1, 1), (1, 1, 1), "valid", None, "last", True, 3),
    ((5, 5, 5), (2, 2, 2), (1, 1, 1), "same", (1, 0, 0), "first", False, 1),
    ((5, 5, 5), (3, 3, 3), (1, 1, 1), "valid", None, "last", True, 2),
    ((5, 5, 5), (1, 2, 3), (1, 1, 1), "same", None, "first", True, 3),
    ((5, 5, 5), (3, 1, 2), (1, 1, 1), "valid", (2, 0, 0), "last", True, 1),
    ((2, 3, 1), (1, 1, 1), (1, 1, 1), "same", None, "first", False, 2),
    ((2, 3, 1), (2, 2, 2), (1, 1, 1), "valid", None, "last", True, 3),
    ((2, 3, 1), (3, 3, 3), (1, 1, 1), "same", (2, 0, 1), "first", True, 1),
    ((2, 3, 1), (1, 2, 3), (1, 1, 1), "valid", None, "last", True, 2),
    ((2, 3, 1), (3, 1, 2), (1, 1, 1), "same", None, "first", False, 3),
    ((5, 1, 4), (1, 1, 1), (1, 1, 1), "valid", None, "last", True, 1),
    ((5, 1, 4), (2, 2, 2), (1, 1, 1), "same", None, "first", True, 2),
    ((5, 1, 4), (3, 3, 3), (1, 1, 1), "valid", None, "last", True, 3),
    ((5, 1, 4), (1, 2, 3), (1, 1, 1), "same", (0, 1, 1), "first", False, 1),
    ((5, 1, 4), (3, 1, 2), (1, 1, 1), "valid", None, "last", True, 2),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), "valid", None, "first", True, 3),
    ((2, 3, 4), (1, 1, 1), (3, 1, 2), "same", None, "last", True, 1),
    ((3, 1, 2), (1, 1, 1), (1, 4, 1), "valid", None, "first", False, 2),
]


def _sweep_case(kernel, strides, dilation, padding, output_padding, data_format, bias,
                batch):
    join = "".join
    return pytest.param(
        dict(kernel_size=kernel, strides=strides, dilation_rate=dilation, padding=padding,
             output_padding=output_padding, data_format=f"channels_{data_format}",
             use_bias=bias, batch=batch),
        id=(f"k{join(map(str, kernel))}-s{join(map(str, strides))}-"
            f"d{join(map(str, dilation))}-{padding}"
            f"{'' if output_padding is None else '-op' + join(map(str, output_padding))}"
            f"-{data_format}{'' if bias else '-nobias'}-n{batch}"))


SWEEP = [_sweep_case(*row) for row in _SWEEP_ROWS]


def _run_layer(case, implementation, rng, spatial=(3, 5, 4), channels=3, filters=2,
               output_shape=None):
    case = dict(case)
    batch = case.pop("batch", 2)
    layer = tf_conv3dt.Conv3DTranspose(filters, implementation=implementation,
                                       bias_initializer="random_normal", **case)
    shape = ((batch, *spatial, channels) if layer.data_format == "channels_last"
             else (batch, channels, *spatial))
    x = rng.standard_normal(shape).astype("float32")
    y = layer(x) if output_shape is None else layer(x, output_shape=output_shape)
    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else None
    expected = np_conv3d_transpose(
        x, kernel, bias, layer.strides, layer.padding, layer.output_padding,
        layer.dilation_rate, layer.data_format, output_shape)
    return y, expected


@pytest.mark.parametrize("case", SWEEP)
def test_sweep_against_numpy_reference(case, implementation, rng):
    y, expected = _run_layer(case, implementation, rng)
    assert_close(y, expected)


@settings(max_examples=30, deadline=None)
@given(
    kernel=st.tuples(*[st.integers(1, 4)] * 3),
    strides=st.tuples(*[st.integers(1, 3)] * 3),
    dilation=st.integers(1, 3),
    spatial=st.tuples(*[st.integers(1, 5)] * 3),
    padding=st.sampled_from(["valid", "same"]),
    channels_first=st.booleans(),
    implementation=st.sampled_from(LOWERINGS),
    data=st.data(),
)
def test_property_matches_reference_at_every_legal_output_size(
        kernel, strides, dilation, spatial, padding, channels_first, implementation, data):
    """Any legal output_shape, chosen at call time, matches the reference, in
    eager mode and through a trace whose spatial sizes are unknown."""
    _check_every_legal_output_size(kernel, strides, dilation, spatial, padding,
                                   channels_first, lowerings.implementation(implementation),
                                   data)


def _check_every_legal_output_size(kernel, strides, dilation, spatial, padding,
                                   channels_first, implementation, data):
    dilation = (1, 1, 1) if max(strides) > 1 else (dilation,) * 3
    ranges = [tf_conv3dt.shapes.output_length_range(n, k, s, padding, d)
              for n, k, s, d in zip(spatial, kernel, strides, dilation)]
    output_shape = tuple(data.draw(st.integers(lo, hi)) for lo, hi in ranges)
    data_format = "channels_first" if channels_first else "channels_last"
    case = dict(kernel_size=kernel, strides=strides, dilation_rate=dilation, padding=padding,
                data_format=data_format)
    y, expected = _run_layer(case, implementation, np.random.default_rng(0),
                             spatial=spatial, output_shape=output_shape)
    assert_close(y, expected)
    layer = tf_conv3dt.Conv3DTranspose(2, implementation=implementation, **case)
    x = np.random.default_rng(1).standard_normal(
        (1, 3, *spatial) if channels_first else (1, *spatial, 3)).astype("float32")
    layer.build(x.shape)
    traced = tf.function(lambda x: layer(x, output_shape=output_shape)).get_concrete_function(
        tf.TensorSpec([None, 3, None, None, None] if channels_first
                      else [None, None, None, None, 3]))
    assert_close(traced(tf.constant(x)), np_conv3d_transpose(
        x, layer.kernel.numpy(), layer.bias.numpy(), strides, padding, None, dilation,
        data_format, output_shape))


def test_all_ones_same_by_hand(implementation):
    """Ones (2, 2, 2) input, ones 3^3 kernel, stride 2, "same": per axis the
    full output [1, 1, 2, 1, 1] is cut to its first 4, and the 3-D output is
    the outer product of [1, 1, 2, 1] with itself three times."""
    layer = tf_conv3dt.Conv3DTranspose(1, 3, 2, padding="same", use_bias=False,
                                       kernel_initializer="ones",
                                       implementation=implementation)
    y = layer(tf.ones((1, 2, 2, 2, 1)))
    line = np.array([1.0, 1.0, 2.0, 1.0])
    expected = np.einsum("i,j,k->ijk", line, line, line)[None, ..., None]
    np.testing.assert_array_equal(y.numpy(), expected)
    assert y.numpy()[0, 2, 2, 2, 0] == 8.0


@pytest.mark.parametrize("kernel,strides,padding,output_padding", [
    (2, 2, "valid", None), (3, 2, "same", None), (3, 1, "same", None),
    ((4, 3, 2), (2, 3, 1), "valid", (1, 2, 0)), (5, 3, "same", (2, 1, 0)),
])
def test_matches_keras_builtin_with_swapped_weights(kernel, strides, padding,
                                                    output_padding, implementation, rng):
    """Where keras.layers.Conv3DTranspose works on CPU (channels_last, no
    dilation), get_weights/set_weights move between the two layers and the
    outputs agree, shape arithmetic included."""
    x = rng.standard_normal((2, 4, 3, 5, 3)).astype("float32")
    builtin = keras.layers.Conv3DTranspose(4, kernel, strides, padding=padding,
                                           output_padding=output_padding,
                                           bias_initializer="random_normal")
    expected = builtin(x)
    ours = tf_conv3dt.Conv3DTranspose(4, kernel, strides, padding=padding,
                                      output_padding=output_padding,
                                      implementation=implementation)
    ours.build(x.shape)
    ours.set_weights(builtin.get_weights())
    assert_close(ours(x), expected)
    builtin.set_weights([w * 2 for w in ours.get_weights()])
    assert_close(builtin(x), 2 * np.asarray(ours(x)))


@op_only
@pytest.mark.parametrize("case", [
    dict(kernel_size=3, strides=2, padding="same"),
    dict(kernel_size=(2, 3, 1), strides=(2, 1, 3), padding="valid", output_padding=(1, 0, 2)),
    dict(kernel_size=3, dilation_rate=2, padding="valid", data_format="channels_first"),
])
def test_numerical_gradients(case, implementation):
    """tf.test.compute_gradient: analytic vs finite differences, in float64."""
    rng = np.random.default_rng(3)
    cf = case.get("data_format") == "channels_first"
    x = rng.standard_normal((2, 2, 3, 2, 3) if cf else (2, 3, 2, 3, 2))
    channels = x.shape[1] if cf else x.shape[-1]
    case = dict(case)
    kernel_size = tf_conv3dt.shapes.normalize_tuple(case.pop("kernel_size"), "kernel_size")
    kernel = rng.standard_normal((*kernel_size, 2, channels))

    def f(x, kernel):
        return tf_conv3dt.conv3d_transpose(x, kernel, implementation=implementation,
                                           **case)

    # In a graph with a session, compute_gradient builds the gradient once and
    # runs it for each Jacobian row; eagerly each row is one more eager
    # gradient call. The Jacobians are the same, in a third of the time.
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph):
        theoretical, numerical = tf.test.compute_gradient(f, [x, kernel])
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6)


@op_only
@pytest.mark.parametrize("case", [
    dict(kernel_size=3, strides=2, padding="same"),
    dict(kernel_size=2, strides=2, padding="valid"),
    dict(kernel_size=(4, 3, 1), strides=(2, 3, 1), padding="valid", output_padding=(1, 2, 0)),
])
def test_gemm_and_native_gradients_agree(case, rng):
    x = tf.constant(rng.standard_normal((2, 5, 4, 3, 6)).astype("float32"))
    case = dict(case)
    kernel_size = tf_conv3dt.shapes.normalize_tuple(case.pop("kernel_size"), "kernel_size")
    kernel = tf.constant(rng.standard_normal((*kernel_size, 4, 6)).astype("float32"))
    results = {}
    for implementation in ("native", "gemm"):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf_conv3dt.conv3d_transpose(x, kernel, implementation=implementation, **case)
            loss = tf.reduce_sum(y * tf.sin(y))
        results[implementation] = [y, *tape.gradient(loss, [x, kernel])]
    for gemm, native in zip(results["gemm"], results["native"]):
        assert_close(gemm, native)


def test_eager_equals_graph_and_dynamic_shapes(implementation, rng):
    """A trace with unknown batch and spatial sizes serves every size."""
    layer = tf_conv3dt.Conv3DTranspose(3, 3, 2, padding="same",
                                       implementation=implementation)
    layer.build((None, None, None, None, 2))
    traced = tf.function(layer).get_concrete_function(
        tf.TensorSpec([None, None, None, None, 2], tf.float32))
    assert traced.structured_outputs.shape.as_list() == [None, None, None, None, 3]
    for shape in [(1, 3, 4, 5, 2), (3, 2, 1, 6, 2)]:
        x = rng.standard_normal(shape).astype("float32")
        eager = layer(x)
        assert eager.shape == (shape[0], shape[1] * 2, shape[2] * 2, shape[3] * 2, 3)
        assert_close(traced(tf.constant(x)), eager, rel=1e-6)
        assert_close(eager, np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(),
                                                (2, 2, 2), "same"))


def test_requested_size_with_dynamic_input(implementation, rng):
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2, padding="valid", implementation=implementation)
    layer.build((None, None, None, None, 2))
    fn = tf.function(lambda x: layer(x, output_shape=(8, 8, 9)))
    traced = fn.get_concrete_function(tf.TensorSpec([None, None, None, None, 2]))
    x = rng.standard_normal((1, 3, 3, 4, 2)).astype("float32")
    expected = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), (2, 2, 2),
                                   "valid", output_shape=(8, 8, 9))
    assert_close(traced(x), expected)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too"):
        traced(rng.standard_normal((1, 5, 3, 4, 2)).astype("float32"))


def test_round_trip_conv3d_then_transposed_with_input_size(implementation, rng):
    """Downsample with a strided conv3d, upsample asking for the input's size:
    odd sizes come back exactly, as a U-Net skip connection needs."""
    x = rng.standard_normal((2, 9, 8, 7, 3)).astype("float32")
    down = keras.layers.Conv3D(4, 3, strides=2, padding="same")
    up = tf_conv3dt.Conv3DTranspose(3, 3, 2, padding="same", implementation=implementation)
    h = down(x)
    assert h.shape == (2, 5, 4, 4, 4)
    y = up(h, output_shape=x.shape[1:4])
    assert y.shape == x.shape
    assert_close(y, np_conv3d_transpose(h, up.kernel.numpy(), up.bias.numpy(), (2, 2, 2),
                                        "same", output_shape=(9, 8, 7)))
    with pytest.raises(ValueError, match=r"axis 0 must be between 9 and 10"):
        up(h, output_shape=(11, 8, 7))


def test_transposed_is_the_adjoint_of_conv3d(implementation, rng):
    """<conv3d(a), b> == <a, conv3d_transpose(b)> with the same kernel, an
    identity that involves TF's forward convolution only."""
    a = tf.constant(rng.standard_normal((1, 7, 6, 5, 2)))
    kernel = tf.constant(rng.standard_normal((3, 2, 3, 2, 4)))
    b_shape = tf.nn.conv3d(a, kernel, (1, 2, 2, 2, 1), "SAME").shape
    b = tf.constant(rng.standard_normal(b_shape))
    forward = tf.nn.conv3d(a, kernel, (1, 2, 2, 2, 1), "SAME")
    # conv3d's (kd, kh, kw, in, out) kernel is already laid out as the
    # transposed convolution's (kd, kh, kw, filters, in_channels).
    backward = tf_conv3dt.conv3d_transpose(b, kernel,
                                           strides=2, padding="same",
                                           output_shape=a.shape[1:4],
                                           implementation=implementation)
    np.testing.assert_allclose(tf.reduce_sum(forward * b), tf.reduce_sum(a * backward),
                               rtol=1e-10)


# 1, a divisor of the 4 channels, and depthwise.
GROUPS = pytest.mark.parametrize("groups", [1, 2, 4], ids=lambda g: f"groups{g}")


@GROUPS
def test_jit_compile(implementation, groups, rng):
    layer = tf_conv3dt.Conv3DTranspose(4, (3, 2, 3), (2, 2, 1), padding="same", groups=groups,
                                       implementation=implementation)
    x = rng.standard_normal((2, 3, 4, 5, 4)).astype("float32")
    eager = layer(x)
    compiled = tf.function(layer, jit_compile=True)(x)
    assert_close(compiled, eager)
    assert_close(compiled, np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(),
                                               (2, 2, 1), "same", groups=groups), rel=1e-4)


@GROUPS
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, implementation, groups, rng):
    x = rng.standard_normal((2, 3, 4, 3, 4)).astype("float32")
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", groups=groups,
                                           implementation=implementation)
        y = layer(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    compute = "float16" if policy == "mixed_float16" else "bfloat16"
    assert y.dtype == compute
    assert layer.kernel.dtype == "float32" and layer.bias.dtype == "float32"
    expected = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), (2, 2, 2),
                                   "same", groups=groups)
    assert_close(tf.cast(y, tf.float32), expected, rel=3e-2)


def _graph_ops(fn, *specs):
    graph = tf.function(fn).get_concrete_function(*specs).graph
    ops = list(graph.get_operations())
    for function in graph.as_graph_def().library.function:
        ops.extend(function.node_def)
    return ops


def test_gemm_lowering_graph_uses_matmul_and_small_ranks():
    """Forward and gradients of the GEMM lowering never reach the slow
    Conv3DBackprop* CPU kernels, and no intermediate exceeds rank 6 (TFLite)."""
    kernel = tf.random.normal((3, 3, 3, 4, 5))

    def train(x):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf_conv3dt.conv3d_transpose(x, kernel, 2, "same", implementation="gemm")
        return tape.gradient(tf.reduce_sum(y * y), [x, kernel])

    ops = _graph_ops(train, tf.TensorSpec((2, 4, 5, 3, 5)))
    types = {op.type if hasattr(op, "type") else op.op for op in ops}
    assert "MatMul" in types or "BatchMatMulV2" in types
    assert not {t for t in types if t.startswith("Conv")}, types
    for op in ops:
        for output in getattr(op, "outputs", []):
            assert output.shape.rank is None or output.shape.rank <= 6, (op.type, output.shape)


# Traces the sub-pixel lowering's forward and training graphs (one convolution,
# k4 s2; phases of their own, k3 s2 and (3, 2, 2) s2) and runs each once.
_SUBPIXEL_GRAPHS = """
import tensorflow as tf
from tf_conv3dt import ops
x = tf.random.normal((1, 6, 6, 6, 4))
for kernel_size in ((4, 4, 4), (3, 3, 3), (3, 2, 2)):
    kernel = tf.random.normal((*kernel_size, 5, 4))
    call = lambda x: ops.conv3d_transpose(x, kernel, 2, "same", implementation="subpixel")

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = call(x)
        return tape.gradient(tf.reduce_sum(y * y), x)

    tf.function(call)(x), train(x)
print("traced")
"""


@op_only
def test_subpixel_graphs_leave_tensorflows_remapper_working():
    """oneDNN's remapper folds a Pad into the Conv3D reading it without
    looking at the Pad's other readers. Where the phases of a sub-pixel
    forward read one padded window, it failed ("remapper failed ...
    Mutation::Apply error") and dropped every fusion of the graph, the
    user's other layers' too. Run with oneDNN switched on, which any x86 CPU
    can run, so that the remapper's fusion is tried here whatever the CPU."""
    result = subprocess.run([sys.executable, "-c", _SUBPIXEL_GRAPHS], capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1",
                                     TF_CPP_MIN_LOG_LEVEL="0"))
    assert result.returncode == 0 and result.stdout.strip() == "traced", result.stderr[-2000:]
    assert "oneDNN custom operations are on" in result.stderr
    assert "remapper failed" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("kernel_size, strides, relation", [
    ((2, 2, 2), (2, 2, 2), "kernel == stride"),
    ((1, 3, 3), (2, 1, 1), "kernel < stride"),
    ((3, 3, 3), (1, 1, 1), "stride 1"),
    ((4, 2, 4), (2, 2, 2), "overlapping"),
    ((3, 2, 2), (2, 2, 2), "overlapping"),
], ids=lambda v: str(v))
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
@cpu_sensitive
def test_auto_follows_the_rule_table(monkeypatch, kernel_size, strides, relation, gpu):
    """auto = native on a GPU; on a CPU, AUTO_RULE's entry for the rule key
    (oneDNN setting, ISA class, dtype) and the kernel/stride relation; forced
    and explicit choices win."""
    ops = tf_conv3dt.ops
    assert ops.kernel_relation(kernel_size, strides) == relation
    for key in ops.AUTO_RULE:
        parts = key.split()
        configuration, isa = parts[0], parts[1] if len(parts) > 1 else "avx2"
        dtype = parts[2] if len(parts) > 2 else "float32"
        cpu_pin.pin(monkeypatch, configuration, isa, gpu)
        dtype = tf.as_dtype(dtype)
        assert ops.rule_key(dtype) == key
        expected = "native" if gpu else ops.AUTO_RULE[key][relation]
        assert ops.resolve_implementation("auto", kernel_size, strides, dtype) == expected
        assert ops.resolve_implementation("GEMM", kernel_size, strides, dtype) == "gemm"
        with ops.forced_implementation("subpixel"):
            assert ops.resolve_implementation("native", kernel_size, strides) == "subpixel"
    assert ops.AUTO_RULE["eigen"][relation] != "native"  # Eigen's backprop kernels


def test_a_forced_rule_of_its_own_runs_each_relation_s_lowering():
    """forced_implementation({relation: lowering}), as an export format that
    measured its runtime forces it, picks by the call's kernel relation,
    whatever the call asked for; a rule that misses a relation, or names no
    lowering, is refused with the value."""
    ops = tf_conv3dt.ops
    own = {"kernel < stride": "gemm", "kernel == stride": "subpixel", "stride 1": "native",
           "overlapping": "gemm"}
    with ops.forced_implementation(own):
        for kernel_size, strides, relation in [((2, 2, 2), (2, 2, 2), "kernel == stride"),
                                               ((1, 1, 1), (2, 2, 2), "kernel < stride"),
                                               ((3, 3, 3), (1, 1, 1), "stride 1"),
                                               ((3, 3, 3), (2, 2, 2), "overlapping")]:
            assert ops.resolve_implementation("native", kernel_size, strides) == own[relation]
    for bad in ({"overlapping": "gemm"}, dict(own, overlapping="fastest")):
        with pytest.raises(ValueError, match="implementation="):
            with ops.forced_implementation(bad):
                pass


@pytest.mark.parametrize("onednn, isa, dtype, key", [
    (False, "avx512", "bfloat16", "eigen"),
    (True, "avx2", "float32", "onednn avx2"),
    (True, "avx2", "bfloat16", "onednn avx2"),  # no bfloat16 rule of its own
    (True, "other", "float32", "onednn avx2"),
    (True, "avx512", "float16", "onednn avx512"),
    (True, "avx512", "bfloat16", "onednn avx512 bfloat16"),
    (True, "amx", "float32", "onednn amx"),
    (True, "amx", "bfloat16", "onednn amx bfloat16"),
    (True, "amx", "float16", "onednn amx"),
])
@cpu_sensitive
def test_rule_key_falls_back_to_the_widest_measured_class(monkeypatch, onednn, isa, dtype,
                                                          key):
    cpu_pin.pin(monkeypatch, "onednn" if onednn else "eigen", isa)
    assert tf_conv3dt.ops.rule_key(tf.as_dtype(dtype)) == key


@pytest.mark.parametrize("dtype, key", [("float32", "onednn avx512"),
                                        ("bfloat16", "onednn avx512 bfloat16")])
@cpu_sensitive
def test_a_class_without_a_rule_takes_the_next_narrower_ones(monkeypatch, dtype, key):
    """An AMX CPU, were its class not measured, runs oneDNN's AVX-512 kernels too."""
    ops = tf_conv3dt.ops
    measured = {name: rule for name, rule in ops.AUTO_RULE.items() if "amx" not in name}
    monkeypatch.setattr(ops.rule, "AUTO_RULE", measured)
    cpu_pin.pin(monkeypatch, "onednn", "amx")
    assert ops.rule_key(tf.as_dtype(dtype)) == key


@pytest.mark.parametrize("flags, named, cap, isa", [
    ("fpu avx2 avx512f amx_tile", None, None, "amx"),
    ("fpu avx2 avx512f amx_tile", None, "AVX512_CORE_BF16", "avx512"),
    ("fpu avx2 avx512f", None, "avx2", "avx2"),
    ("fpu avx2 avx512f", None, "AVX2_VNNI", "avx2"),
    ("fpu avx2 avx512f", None, "SSE41", "other"),
    ("fpu avx2", None, "AVX512_CORE_AMX", "avx2"),  # a cap never widens the CPU
    ("fpu avx2 avx512f", None, "ALL", "avx512"),
    ("fpu sse4_2", None, None, "other"),
    # TF_CONV3DT_CPU_ISA names the class instead of the flags, and a cap still holds.
    ("fpu avx2", " AMX", None, "amx"),
    ("fpu avx2 avx512f amx_tile", "avx2", None, "avx2"),
    ("fpu avx2", "avx512", "AVX2", "avx2"),
    ("fpu avx2", "", None, "avx2"),
])
@cpu_sensitive
def test_cpu_isa_reads_the_flags_and_onednns_cap(monkeypatch, flags, named, cap, isa):
    cpu = tf_conv3dt.ops.cpu
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": flags})
    for variable, value in ((cpu.ENV_CPU_ISA, named), ("ONEDNN_MAX_CPU_ISA", cap)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert cpu.cpu_isa() == isa


def test_the_machine_is_named_by_its_flags_family_and_model(monkeypatch):
    """What the benchmarks name a machine by: its own ISA class, whatever a
    run holds it to, and its family and model numbers where the OS gives them."""
    cpu = tf_conv3dt.ops.cpu
    monkeypatch.setenv(cpu.ENV_CPU_ISA, "amx")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": "fpu avx2 avx512f",
                                                  "cpu family": "25", "model": "17"})
    assert (cpu.flags_isa(), cpu.cpu_isa(), cpu.cpu_family()) == ("avx512", "avx2", (25, 17))
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": "fpu sse4_2"})
    assert (cpu.flags_isa(), cpu.cpu_family()) == ("other", None)


def test_a_bad_cpu_isa_name_is_named(monkeypatch):
    monkeypatch.setenv(tf_conv3dt.ops.cpu.ENV_CPU_ISA, "sse4")
    with pytest.raises(ValueError, match="TF_CONV3DT_CPU_ISA='sse4'"):
        tf_conv3dt.ops.cpu.cpu_isa()
