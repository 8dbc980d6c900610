"""What the benchmarks share: the CPU's id, the result files' record and names, cases, timing.

A script imports it as ``import common`` (run as ``python benchmarks/x.py``,
its own directory is the first entry of ``sys.path``); the tests and the
docs, from the repository root, as ``benchmarks.common``. So it imports no
other module of benchmarks/, and TensorFlow, Keras and PyTorch only inside
the functions that use them: the docs read result names without them.

Every result file is ``results/<benchmark>/<cpu id>_<date>[_<label>].json``
(:func:`result_path`), where ``<benchmark>`` is the script's name without
``bench_``, and holds :func:`run_record` at its top (the main benchmark's,
at the top of each configuration's record).

Run as a script it is PyTorch's timing process (:func:`torch_ms` starts it):
PyTorch's OpenMP threads spin on after its calls and slow whatever runs
next in their process, so it is timed in a process of its own.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _peak():
    """tf_conv3dt's peak-memory reader (``PeakMemory``, ``status``,
    ``trim``), loaded from its file: through the package, it would import
    TensorFlow into PyTorch's processes."""
    import importlib.util

    path = os.path.join(os.path.dirname(RESULTS), os.pardir, "tf_conv3dt", "ops", "tuning",
                        "peak.py")
    spec = importlib.util.spec_from_file_location("tf_conv3dt_peak", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peak = _peak()

# (input shape NDHWC, filters, kernel, stride, padding): the main benchmark's
# cases, which bench_xla, bench_tuning_block and profile_onednn pick from.
CASES = [
    ((4, 10, 8, 12, 128), 32, 2, 2, "valid"),
    ((1, 16, 16, 16, 256), 128, 2, 2, "valid"),
    ((1, 32, 32, 32, 64), 32, 3, 2, "same"),
    ((2, 16, 16, 16, 32), 32, 3, 1, "same"),
    ((1, 16, 16, 16, 64), 32, 4, 2, "same"),
    # A kernel shorter than its stride with "same": the native path runs it as
    # "valid" plus a crop (Eigen's gradient is wrong otherwise); the built-in
    # layer shows the unrouted op.
    ((2, 16, 16, 16, 64), 32, 1, 2, "same"),
    # 3-D U-Net decoder stages.
    ((2, 32, 32, 32, 64), 32, 2, 2, "valid"),
    ((1, 64, 64, 64, 32), 16, 3, 2, "same"),
    ((2, 24, 24, 24, 128), 64, 3, 1, "same"),
]

# The environment of each CPU configuration a benchmark runs in a child
# process: "default" (this machine as it is), "avx2" (what CPUs without
# AVX-512 get: TensorFlow's Eigen kernels, and oneDNN in PyTorch and
# OpenBLAS in NumPy held to AVX2), "onednn" (TensorFlow's oneDNN kernels
# switched on) and "onednn-avx2" (those kernels held to AVX2, as an
# AVX2-only CPU runs them with oneDNN switched on).
CONFIGURATIONS = {
    "default": {},
    "avx2": {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell"},
    "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "onednn-avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
# Each of them "-unpooled" too: every tensor of 1 MiB or more in a mapping
# of its own, handed back to the system when freed. By default glibc raises
# its mmap threshold to the largest block freed (up to 32 MiB), so later
# tensors of that size come from its heap, and TensorFlow with oneDNN keeps
# large tensors in a pool of its own; either holds freed memory that the
# resident peak then counts.
UNPOOLED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
CONFIGURATIONS.update({f"{name}-unpooled": {**environment, **UNPOOLED}
                       for name, environment in list(CONFIGURATIONS.items())})

# The compute dtype of each Keras policy, in PyTorch's names too.
POLICY_DTYPES = {"float32": "float32", "mixed_float16": "float16",
                 "mixed_bfloat16": "bfloat16"}


def case_label(case):
    """``"(1, 16, 16, 16, 64)->32 k4 s2 same"``: a case as the result rows name it."""
    shape, filters, kernel, stride, padding = case
    return f"{shape}->{filters} k{kernel} s{stride} {padding}"


# The CPU's id.

def cpu_id():
    """The CPU as the result files name it: the first two words of its model
    name, ``f<family>m<model>`` where the OS reports them, and its own ISA
    class, e.g. "amd-epyc-f25m17-avx512" or "intel-xeon-f6m167-amx". The
    family and model tell apart CPUs of one model name (the OS calls two
    EPYC generations "AMD EPYC")."""
    from tf_conv3dt.ops import cpu

    words = cpu.cpu_model().lower().replace("(r)", "").replace("(tm)", "").split()
    family = cpu.cpu_family()
    parts = [*words[:2], *(["f{}m{}".format(*family)] if family else []), cpu.flags_isa()]
    return "-".join(parts).replace("_", "-")


# The result files.

def kernel_environment():
    """The environment variables, as set here, that select TensorFlow's,
    oneDNN's and OpenBLAS's CPU kernels."""
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith(("TF_ENABLE_ONEDNN", "ONEDNN", "OPENBLAS"))}


def run_record():
    """What every result records of its run: ``cpu`` (:func:`cpu_id`),
    ``cpu_model`` (the OS's name), ``isa`` (the class oneDNN runs, capped as
    configured), ``cpu_configuration`` ("onednn" or "eigen"), ``cores``,
    ``tensorflow`` (its version), ``environment``
    (:func:`kernel_environment`) and ``date``. Files written before it
    record some of these, under these keys but for ``cpu``, which held the
    model name (their file name holds the id)."""
    import tensorflow as tf

    from tf_conv3dt.ops import cpu

    return {"cpu": cpu_id(), "cpu_model": cpu.cpu_model(), "isa": cpu.cpu_isa(),
            "cpu_configuration": cpu.cpu_configuration(), "cores": os.cpu_count(),
            "tensorflow": tf.__version__, "environment": kernel_environment(),
            "date": datetime.date.today().isoformat()}


class ResultName(NamedTuple):
    """What a result file's name says: the CPU's id, the date of the run and
    its label ("" where it has none)."""

    cpu: str
    date: str
    label: str


def parse_result_name(path):
    """The :class:`ResultName` of a result file's path."""
    cpu, date, *label = os.path.basename(path)[:-len(".json")].split("_", 2)
    return ResultName(cpu, date, label[0] if label else "")


def add_result_arguments(parser, benchmark):
    """``--out`` (the directory, ``results/<benchmark>`` unless given) and
    ``--label`` (what tells this run from another of the same machine, day
    and settings)."""
    parser.add_argument("--out", default=os.path.join(RESULTS, benchmark),
                        help="directory of the result file (default: %(default)s)")
    parser.add_argument("--label", help="words that tell this run from another of the "
                        "same machine, day and settings, e.g. after-the-change")


def result_path(out, *labels):
    """``out/<cpu id>_<today>[_<label>].json``, the label the given
    ``labels`` that are not None, joined by "-" (an underscore separates the
    name's three parts, so it becomes "-" inside one)."""
    label = "-".join(str(part) for part in labels if part).replace("_", "-").replace(" ", "-")
    name = "_".join([cpu_id(), datetime.date.today().isoformat(), *([label] if label else [])])
    return os.path.join(out, f"{name}.json")


def write_result(result, path, merged=False):
    """Writes ``result`` to ``path``, which must not exist unless ``result``
    was ``merged`` with what it holds: a kept run of the same name is never
    overwritten."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "w" if merged else "x") as f:
            json.dump(result, f, indent=1)
    except FileExistsError:
        raise SystemExit(f"{path} exists; not overwritten: give this run a --label, or "
                         "another --out") from None
    print(f"wrote {path}")


# Timing.

def interleaved_ms(fns, repeats, warmup=3, slow_s=2.0):
    """Median milliseconds of each of ``fns`` ({name: fn}), timed in rounds of
    one call each (right after an untimed one, as tuning times them:
    ``tuning.Timer.primed``), so that what else a shared machine runs weighs
    on all of them alike. Only paths of one library belong together: the
    worker threads of PyTorch's OpenMP pool spin on after its call, slowing
    whatever runs next, and a pause between calls would wake every path up
    cold (+4 ms a call here). Names whose call raises are left out. A path
    whose first call (the trace) takes over ``slow_s`` (Eigen's
    Conv3DBackprop* kernels on the large cases: seconds a step) is timed in
    two rounds only."""
    from tf_conv3dt.ops import tuning

    slow, failed = set(), set()
    for name, fn in fns.items():
        try:
            start = time.perf_counter()
            fn()
            if time.perf_counter() - start > slow_s:
                slow.add(name)
                continue
            for _ in range(warmup - 1):
                fn()
        except Exception as error:  # the built-in layer fails on some cases
            print(f"  {name} failed: {type(error).__name__}", flush=True)
            failed.add(name)
    times = {name: [] for name in fns if name not in failed}
    timer = tuning.Timer()
    for round_ in range(repeats):
        for name in times:
            if name in slow and round_ >= 2:
                continue
            times[name].append(timer.primed(fns[name]))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def tf_paths(shape, filters, kernel, stride, padding, data_format="channels_last", groups=1):
    """``{name: (forward, training step)}``, blocking calls of our layer with
    "auto" and each lowering "auto" picks from, and of Keras's own layer
    where it has the configuration (it has no ``groups``), under the global
    Keras policy. The training step's loss is ``sum(y * y)``, whose upstream
    gradient TensorFlow cannot fold away.

    The input is in the policy's compute dtype, as the layer before hands
    it on in a mixed-precision model and as PyTorch's paths get theirs. Runs
    before 2026-12-04's last ones fed float32, so their bfloat16 rows hold
    each layer's cast of its input too."""
    import tensorflow as tf

    import tf_conv3dt
    from tf_conv3dt._keras import keras
    from tf_conv3dt.ops import lowerings

    if data_format == "channels_first":
        shape = (shape[0], shape[4], *shape[1:4])
    x = tf.cast(tf.random.normal(shape), keras.mixed_precision.global_policy().compute_dtype)
    layers = {}
    for implementation in ("auto", *lowerings.names(auto=True)):
        layer = tf_conv3dt.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                           data_format=data_format, groups=groups,
                                           implementation=implementation)
        layer.build(shape)
        layers[f"tf_conv3dt {implementation}"] = layer
    if groups == 1:
        builtin = keras.layers.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                               data_format=data_format)
        builtin.build(shape)
        layers["keras Conv3DTranspose"] = builtin
    # The results are not read out: EagerTensor.numpy() copies, which added
    # one output's worth to every forward peak, and its time, where
    # PyTorch's paths copy nothing (runs before those of 2026-12-07
    # labelled "warm" and "after-gemm-taps" did). A function's eager call
    # on a CPU returns when its ops have run; on a GPU, once its kernels are
    # queued, so there each call waits for them.
    gpu = bool(tf.config.list_logical_devices("GPU"))

    def blocking(function):
        def call():
            result = function(x)
            if gpu:
                tf.test.experimental.sync_devices()
            return result
        return call

    paths = {}
    for name, layer in layers.items():
        forward = tf.function(lambda x, layer=layer: layer(x))

        @tf.function
        def train_step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, layer.kernel])

        paths[name] = (blocking(forward), blocking(train_step))
    return paths


def torch_paths(shape, filters, kernel, stride, padding, policy="float32", groups=1):
    """``{"torch conv_transpose3d": (forward, training step)}``: PyTorch's,
    with a bias as our layer and Keras's add one (runs before 2026-12-04 had
    none), on tensors of the policy's compute dtype, with Keras's padding
    and the loss ``sum(y * y)``; {} where PyTorch (the extra
    tf_conv3dt[bench]) is not installed."""
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(os.cpu_count())
    dtype = getattr(torch, POLICY_DTYPES[policy])
    batch, d, h, w, channels = shape
    x = torch.randn(batch, channels, d, h, w, dtype=dtype)
    weight = torch.randn(channels, filters // groups, kernel, kernel, kernel,
                         dtype=dtype) * 0.05
    bias = torch.randn(filters, dtype=dtype) * 0.05
    # PyTorch's padding p crops p from both sides; Keras "same" with this
    # case's odd or even kernel matches p = (k - s + 1) // 2 and output_padding.
    if padding == "same":
        pad = (kernel - stride + 1) // 2
        out_pad = stride * d - ((d - 1) * stride - 2 * pad + kernel)
    else:
        pad, out_pad = 0, 0

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose3d(
                x, weight, bias, stride=stride, padding=pad, output_padding=out_pad,
                groups=groups)

    xg = x.clone().requires_grad_(True)
    wg = weight.clone().requires_grad_(True)

    def train_step():
        y = torch.nn.functional.conv_transpose3d(xg, wg, bias, stride=stride, padding=pad,
                                                 output_padding=out_pad, groups=groups)
        (y * y).sum().backward()
        xg.grad = None
        wg.grad = None

    return {"torch conv_transpose3d": (forward, train_step)}


def torch_ms(case, repeats, policy, groups=1):
    """PyTorch's (forward, training step) median ms on ``case`` (shape,
    filters, kernel, stride, padding), timed in a process of its own; None
    where PyTorch is missing or the case fails there."""
    command = [sys.executable, os.path.abspath(__file__), "--torch", json.dumps(list(case)),
               "--repeats", str(repeats), "--policy", policy, "--groups", str(groups)]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"  torch failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return None


def torch_version():
    """PyTorch's version, read from a child process (a benchmark's own
    process never imports it), or "not installed"."""
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "not installed"


def _time_torch():
    """The process :func:`torch_ms` starts: prints PyTorch's (forward,
    training step) median ms as JSON, or null."""
    parser = argparse.ArgumentParser(description=_time_torch.__doc__)
    parser.add_argument("--torch", required=True, help="the case, as a JSON list")
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--policy", required=True, choices=sorted(POLICY_DTYPES))
    parser.add_argument("--groups", type=int, default=1)
    args = parser.parse_args()
    shape, *arguments = json.loads(args.torch)
    paths = torch_paths(tuple(shape), *arguments, policy=args.policy, groups=args.groups)
    if not paths:
        return print(json.dumps(None))
    (forward, train), = paths.values()
    times = (interleaved_ms({"f": forward}, args.repeats).get("f"),
             interleaved_ms({"t": train}, args.repeats).get("t"))
    print(json.dumps(None if None in times else times))


if __name__ == "__main__":
    _time_torch()
