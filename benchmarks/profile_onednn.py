"""Where a forward pass spends its time in oneDNN, primitive by primitive, ours against PyTorch's.

Runs each path's forward pass of one benchmark case (``common.CASES``) in a
child process of its own with ``ONEDNN_VERBOSE=profile_exec``,
which makes oneDNN print every primitive it executes and its milliseconds.
After a warm-up it times ``--repeats`` calls and prints, per call: the wall
time, the oneDNN primitives' time by kind and implementation (convolution,
deconvolution, reorder, matmul, ...), and what is left, the time spent
outside oneDNN (TensorFlow's own kernels: casts, transposes, pads, the
graph's overhead). PyTorch runs in a child of its own, on tensors of the
policy's compute dtype, as in the benchmark. The profiles go to
results/profile_onednn/, labelled by the compute dtype (``common.result_path``).

Usage: python benchmarks/profile_onednn.py [--cases 3 7] [--policy mixed_bfloat16]
       [--paths native gemm subpixel torch] [--repeats 20] [--label LABEL]
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import time

import common

MARK = "profile_onednn: timed calls start"


def child(case, path, policy, repeats):
    """In the profiled process: warm ``path`` up, print MARK, run it ``repeats``
    times, then print the wall milliseconds per call as JSON."""
    if path == "torch":
        (forward, _), = common.torch_paths(*common.CASES[case], policy=policy).values()
    else:
        from tf_conv3dt._keras import keras

        keras.mixed_precision.set_global_policy(policy)
        forward, _ = common.tf_paths(*common.CASES[case])[f"tf_conv3dt {path}"]
    for _ in range(5):
        forward()
    print(MARK, flush=True)
    start = time.perf_counter()
    for _ in range(repeats):
        forward()
    wall = (time.perf_counter() - start) / repeats * 1e3
    print(json.dumps({"wall_ms": wall}), flush=True)


def profile(case, path, policy, repeats):
    """{wall_ms, onednn_ms, outside_ms, primitives: {kind impl (prop): ms}} per call."""
    command = [sys.executable, os.path.abspath(__file__), "--child", str(case), path,
               "--policy", policy, "--repeats", str(repeats)]
    env = dict(os.environ, ONEDNN_VERBOSE="profile_exec", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = result.stdout.splitlines()
    if MARK not in lines:
        raise RuntimeError(f"{path} failed: {result.stderr.strip().splitlines()[-1:]}")
    timed = lines[lines.index(MARK) + 1:]
    primitives = collections.defaultdict(float)
    for line in timed:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")  # exec,cpu,KIND,IMPL,PROP,...,MS
        primitives[f"{fields[at + 2]} {fields[at + 3]} ({fields[at + 4]})"] += float(fields[-1])
    wall = json.loads(timed[-1])["wall_ms"]
    per_call = {name: ms / repeats for name, ms in sorted(
        primitives.items(), key=lambda item: -item[1])}
    onednn = sum(per_call.values())
    return dict(wall_ms=wall, onednn_ms=onednn, outside_ms=wall - onednn, primitives=per_call)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--paths", nargs="+", default=["native", "gemm", "subpixel", "torch"])
    parser.add_argument("--policy", default="mixed_bfloat16",
                        choices=sorted(common.POLICY_DTYPES))
    parser.add_argument("--repeats", type=int, default=20)
    common.add_result_arguments(parser, "profile_onednn")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(int(args.child[0]), args.child[1], args.policy, args.repeats)
    print(f"{common.cpu_id()}, {os.cpu_count()} cores, {args.policy}, "
          f"forward pass, ms per call")
    profiles = {}
    for case in args.cases:
        label = common.case_label(common.CASES[case])
        for path in args.paths:
            found = profile(case, path, args.policy, args.repeats)
            profiles[f"{label} {path}"] = found
            print(f"\n{label} {path}: wall {found['wall_ms']:.2f}, oneDNN "
                  f"{found['onednn_ms']:.2f}, outside oneDNN {found['outside_ms']:.2f}")
            for name, ms in found["primitives"].items():
                print(f"  {ms:8.3f}  {name}")
    result = dict(common.run_record(), policy=args.policy, profiles=profiles)
    common.write_result(result, common.result_path(
        args.out, common.POLICY_DTYPES[args.policy], args.label))


if __name__ == "__main__":
    main()
