"""Peak memory of a forward pass and of a training step, per path, each in a process of its own.

For each case and each path (tf_conv3dt "auto" with timing off, as
``TF_CONV3DT_AUTOTUNE=0`` runs it, and tuned, as it runs by default with
TensorFlow's Eigen kernels and on AMX, each lowering "auto" picks from,
keras.layers.Conv3DTranspose and PyTorch's conv_transpose3d) a fresh
process builds the path, runs it once on a tiny volume (the library's
one-off costs, :func:`_child`) and once on the case: the peak resident
memory during that call, less the resident memory before it
(``common.peak``; TensorFlow keeps no allocator statistics on a CPU), and
its seconds. A training step is the forward pass, ``sum(y * y)`` and the
gradients with respect to the input and the kernel, traced and run once,
as the first step of a fit.

``--scaling`` instead grows the volume of two U-Net decoder stages (k3 s2
"same" and k2 s2, 32 -> 16 channels, batch 1) edge by edge from 32, each
path until a step fails, is killed by ``--memory-limit`` (an RSS watchdog:
an out-of-memory probe never takes the machine down) or runs past
``--timeout``: the largest edge at which a training step completes, and
how time and peak grow with the work. Results go to results/memory/
(``common.result_path``):

    python benchmarks/bench_memory.py [--configurations default onednn]
    python benchmarks/bench_memory.py --scaling [--memory-limit-gib 20]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import common

# The memory benchmark's own cases beside common.CASES: the U-Net decoder
# stages where the lowerings' peaks differ most.
CASES = [
    ((1, 64, 64, 64, 32), 16, 3, 2, "same"),
    ((1, 48, 48, 48, 64), 32, 2, 2, "valid"),
    ((1, 64, 64, 64, 32), 16, 4, 2, "same"),
    *common.CASES,
]
# The stages --scaling grows: (filters, kernel, stride, padding), 32 input channels.
STAGES = {"k3 s2 same": (16, 3, 2, "same"), "k2 s2 valid": (16, 2, 2, "valid")}
EDGES = (32, 48, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320)
TORCH = "torch conv_transpose3d"
TUNED = "tf_conv3dt auto tuned"
STEPS = ("forward", "train")


def paths():
    """The paths, by the names ``common.tf_paths`` and ``torch_paths`` give them."""
    from tf_conv3dt.ops import lowerings

    return ["tf_conv3dt auto", TUNED,
            *(f"tf_conv3dt {name}" for name in lowerings.names(auto=True)),
            "keras Conv3DTranspose", TORCH]


def probe(case, path, step, limit_bytes=None, timeout=None, env=None):
    """``{"peak_mib", "seconds"}`` of one ``step`` of ``path`` on ``case`` in a
    fresh process, or ``{"failed": why}`` where it raised, ran out of memory,
    passed ``limit_bytes`` of resident memory (killed) or ``timeout`` seconds.

    ``TUNED`` runs twice, with a tuning cache of its own: the first process
    times the lowerings and writes its choices, the second, measured, reads
    them, as a training run does once its first step has tuned (the timing
    itself would hold the candidates' memory)."""
    env = dict(env or {})
    if path == TUNED:
        with tempfile.TemporaryDirectory() as cache:
            env.update(TF_CONV3DT_CACHE_DIR=cache, TF_CONV3DT_AUTOTUNE="1")
            tuning = _probe_once(case, path, step, limit_bytes, timeout, env)
            if "failed" in tuning:
                return {"failed": f"while tuning: {tuning['failed']}"}
            return _probe_once(case, path, step, limit_bytes, timeout, env)
    return _probe_once(case, path, step, limit_bytes, timeout, env)


def _probe_once(case, path, step, limit_bytes, timeout, env):
    command = [sys.executable, os.path.abspath(__file__), "--child",
               json.dumps([list(case[0]), *case[1:]]), path, step]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **env})
    killed = []

    def watch():
        while child.poll() is None:
            try:
                if limit_bytes and common.peak.status("VmRSS:", child.pid) > limit_bytes:
                    killed.append("memory limit")
                    child.kill()
            except OSError:
                return
            time.sleep(0.05)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return {"failed": f"over {timeout} s"}
    if killed:
        return {"failed": f"over {limit_bytes / 2**30:.0f} GiB resident"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (err.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return {"failed": last[-200:]}


def _child(case, path, step):
    """The probe's process: builds ``path`` and prints its one ``step``'s peak.

    First it runs the same ``step`` of ``path`` on a (1, 4, 4, 4) volume of
    the case's channels, as a model's other layers run before any one of
    them: a process's first step of a library pays once for its runtime
    (thread pools, function runtime, kernel registry), 13-17 MiB of
    TensorFlow's and 4-12 MiB of PyTorch's on the AVX2-only EPYC, which
    varied by up to 10 MiB between runs and dominated the smaller cases.
    Runs before 2026-12-07's "warm" ones include it."""
    shape, *arguments = case
    if path == TUNED:
        path = "tf_conv3dt auto"  # timing as probe() set it
    elif path != TORCH:
        os.environ["TF_CONV3DT_AUTOTUNE"] = "0"
    paths = common.torch_paths if path == TORCH else common.tf_paths
    paths((1, 4, 4, 4, shape[4]), *arguments)[path][STEPS.index(step)]()
    call = paths(tuple(shape), *arguments)[path][STEPS.index(step)]
    common.peak.trim()  # hand what building freed back to the system
    with common.peak.PeakMemory() as memory:
        started = time.perf_counter()
        call()
        seconds = time.perf_counter() - started
    print(json.dumps({"peak_mib": memory.peak / 2**20, "seconds": seconds}))


def cases_table(args, env):
    rows = []
    for case in [CASES[i] for i in args.cases] if args.cases else CASES:
        label = common.case_label(case)
        for path in args.paths or paths():
            row = {"case": label, "path": path}
            for step in STEPS:
                row[step] = probe(case, path, step, args.memory_limit_gib * 2**30,
                                  args.timeout, env)
            rows.append(row)
            print(f"{label:<40} {path:<24} " + "  ".join(
                f"{step} {_text(row[step])}" for step in STEPS), flush=True)
    return rows


def scaling(args, env):
    rows = []
    for stage, (filters, kernel, stride, padding) in STAGES.items():
        for path in args.paths or paths():
            for edge in EDGES:
                case = ((1, edge, edge, edge, 32), filters, kernel, stride, padding)
                result = probe(case, path, "train", args.memory_limit_gib * 2**30,
                               args.timeout, env)
                rows.append({"stage": stage, "path": path, "edge": edge, **result})
                print(f"{stage:<12} {path:<24} edge {edge:>4}: {_text(result)}", flush=True)
                if "failed" in result:
                    break
    largest = {}
    for row in rows:
        if "failed" not in row:
            key = f"{row['stage']} | {row['path']}"
            largest[key] = max(largest.get(key, 0), row["edge"])
    return rows, largest


def _text(result):
    if "failed" in result:
        return f"failed ({result['failed']})"
    return f"{result['peak_mib']:8.0f} MiB {result['seconds']:7.2f} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaling", action="store_true",
                        help="grow the decoder stages' volume instead of the cases")
    parser.add_argument("--memory-limit-gib", type=float, default=20.0,
                        help="resident memory at which a probe is killed")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a probe may run")
    parser.add_argument("--configurations", nargs="+", default=["default"],
                        choices=sorted(common.CONFIGURATIONS))
    parser.add_argument("--cases", type=int, nargs="*",
                        help="indices into CASES (default: all)")
    parser.add_argument("--paths", nargs="*", help="paths (default: paths())")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    common.add_result_arguments(parser, "memory")
    args = parser.parse_args()
    if args.child:
        case, path, step = args.child
        return _child(json.loads(case), path, step)
    result = dict(common.run_record(), torch=common.torch_version(),
                  memory_limit_gib=args.memory_limit_gib, timeout_s=args.timeout,
                  configurations={})
    for name in args.configurations:
        env = common.CONFIGURATIONS[name]
        print(f"\n=== configuration {name}", flush=True)
        if args.scaling:
            rows, largest = scaling(args, env)
            entry = {"scaling": rows, "largest_trainable_edge": largest}
        else:
            entry = {"rows": cases_table(args, env)}
        result["configurations"][name] = dict(entry, environment=common.CONFIGURATIONS[name])
    common.write_result(result, common.result_path(args.out, "scaling" if args.scaling
                                                   else None, args.label))


if __name__ == "__main__":
    main()
