"""Derives "auto"'s CPU rule (tf_conv3dt.ops.AUTO_RULE) from benchmark runs.

Reads the JSON files that ``bench_conv3d_transpose.py`` writes (default:
the float32 and bfloat16 runs of :data:`RULE_RUNS`). Each configuration in
them records whether TensorFlow ran its oneDNN kernels, the ISA class
oneDNN ran and the policy; together
they give the run's rule key (``ops.rule_key``): "eigen", "onednn avx2",
"onednn avx512", "onednn amx", and the last two with " bfloat16" after them
for a mixed_bfloat16 run. For
each key and each kernel/stride relation (``ops.kernel_relation``), every
lowering gets a score: the geometric mean, over that relation's cases and
runs, of ``sqrt(forward / fastest lowering's forward * training step /
fastest lowering's training step)``, so the forward and the training step
weigh the same. The lowest score wins, except that the native op is not
eligible without oneDNN: Eigen's Conv3DBackprop* kernels collapse at batch > 1
(50x slower than the lowerings on the benchmark's batch-4 case), and the rule
must hold for batch sizes unknown at trace time.

Usage: python benchmarks/derive_auto_rule.py [FILE ...] [--check]
  --check: exit 1 when the derived table differs from ops.AUTO_RULE.

The tests import it as ``benchmarks.derive_auto_rule``, so it imports no
other module of benchmarks/ (see benchmarks/__init__.py).
"""

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict

from tf_conv3dt.ops import AUTO_RULE, kernel_relation
from tf_conv3dt.ops import lowerings
from tf_conv3dt.ops.rule import measured_key

LOWERINGS = lowerings.names(auto=True)
RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "conv3d_transpose")
# The runs the rule is derived from (tests/test_auto_rule.py checks
# ops.AUTO_RULE against them). The others beside them were made to measure a
# change to tuning or to the benchmark on a machine these already cover;
# benchmarks/results/notebook.md says what each measured, and what it would
# change here.
RULE_RUNS = tuple(os.path.join(RUNS, name) for name in (
    "amd-epyc-avx2_2026-11-27_float32-run1.json",
    "amd-epyc-avx2_2026-11-27_float32-run2.json",
    "amd-epyc-avx2_2026-12-01_float32-tuned.json",
    "amd-epyc-f26-avx512_2026-12-02_float32.json",
    "amd-epyc-f26-avx512_2026-12-02_bfloat16.json",
    "amd-epyc-f26-avx512_2026-12-03_float32.json",
    "amd-epyc-f26-avx512_2026-12-03_bfloat16.json",
    "amd-epyc-f25m17-avx512_2026-12-03_float32.json",
    "amd-epyc-f25m17-avx512_2026-12-03_bfloat16.json",
    "intel-xeon-f6m167-amx_2026-12-04_float32-run1.json",
    "intel-xeon-f6m167-amx_2026-12-04_float32-run2.json",
    "intel-xeon-f6m167-amx_2026-12-04_float32-avx2.json",
    "intel-xeon-f6m167-amx_2026-12-04_bfloat16-run1.json",
    "intel-xeon-f6m167-amx_2026-12-04_bfloat16-run2.json",
))


# The compute dtype of each policy a rule is kept for (float16 is not a CPU policy).
POLICY_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16"}


def load_runs(paths):
    """The float32 and mixed_bfloat16 runs of these files, one per configuration."""
    runs = []
    for path in paths:
        with open(path) as f:
            for run in json.load(f).values():
                if run.get("policy", "float32") in POLICY_DTYPES:
                    runs.append(run)
    return runs


def rule_key(run):
    """The ``ops.AUTO_RULE`` key a run measures. Runs kept from before the
    benchmark recorded the ISA class all come from an AVX2-only AMD EPYC."""
    return measured_key(run["cpu_configuration"], run.get("isa", "avx2"),
                        POLICY_DTYPES[run.get("policy", "float32")])


def scores(runs):
    """{rule key: {relation: {lowering: score}}}."""
    ratios = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        by_case = defaultdict(dict)
        for row in run["rows"]:
            name = row["path"].split()
            if name[0] == "tf_conv3dt" and name[1] in LOWERINGS:
                by_case[row["case"]][name[1]] = row
        for case, rows in by_case.items():
            if set(rows) != set(LOWERINGS):
                continue  # a lowering failed or was not run: no fair comparison
            kernel, stride = map(int, re.search(r" k(\d+) s(\d+) ", case).groups())
            fastest_forward = min(r["forward_ms"] for r in rows.values())
            fastest_train = min(r["train_ms"] for r in rows.values())
            for lowering, r in rows.items():
                ratio = math.sqrt(r["forward_ms"] / fastest_forward
                                  * r["train_ms"] / fastest_train)
                # The benchmark's cases are cubic.
                relation = kernel_relation((kernel,) * 3, (stride,) * 3)
                ratios[rule_key(run)][relation][lowering].append(ratio)
    return {key: {relation: {lowering: math.exp(sum(map(math.log, values)) / len(values))
                             for lowering, values in by_lowering.items()}
                  for relation, by_lowering in by_relation.items()}
            for key, by_relation in ratios.items()}


def eligible(key):
    return [name for name in LOWERINGS if key != "eigen" or name != "native"]


def derive(runs):
    """{rule key: {relation: the eligible lowering with the lowest score}}."""
    return {key: {relation: min(eligible(key), key=by_lowering.get)
                  for relation, by_lowering in by_relation.items()}
            for key, by_relation in scores(runs).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="benchmark JSON files (default: RULE_RUNS)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the result differs from ops.AUTO_RULE")
    args = parser.parse_args()
    runs = load_runs(args.files or RULE_RUNS)
    table = scores(runs)
    rule = derive(runs)
    for key, by_relation in sorted(table.items()):
        for relation, by_lowering in sorted(by_relation.items()):
            print(f"{key:<23} {relation:<17} -> {rule[key][relation]:<9} "
                  + "  ".join(f"{name} {score:.2f}" for name, score in sorted(by_lowering.items())))
    if args.check:
        if rule != AUTO_RULE:
            print(f"ops.AUTO_RULE differs: {AUTO_RULE}")
            return 1
        print("ops.AUTO_RULE agrees.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
