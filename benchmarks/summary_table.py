"""The short Performance table of the docs, generated from benchmark JSON files.

One row per configuration of each run (bench_conv3d_transpose.py --json, with
or without --configurations): the worst ratio over the cases of tuned
``auto`` (timed as a path of its own, and as the row of the lowering it
chose, the same graph, or its own where it chose a pair of lowerings; runs
since 2026-12-03) and of the static rule's
choice to our fastest lowering, of ``auto``
to PyTorch (forward and training step), and the most a case's tuning took:
its timing (``timed_s``, in runs that record it) and the
extra time of its first call, which holds the timing and what a first call
costs untuned too.

Usage: python benchmarks/summary_table.py FILE.json [FILE.json ...]
"""

import json
import sys


def runs(path):
    """(configuration name, run) pairs of one JSON file."""
    with open(path) as f:
        content = json.load(f)
    if "rows" in content:
        return [("as is", content)]
    return list(content.items())


def row(name, run):
    summary = run["summary"]

    def worst(field):
        values = [entry[field] for entry in summary if entry.get(field) is not None]
        return f"{max(values):.2f}x" if values else "n/a"

    timed = (f"{max(entry['timed_s'] for entry in summary):.1f}"
             if "timed_s" in summary[0] else "n/a")
    onednn = "on" if run["cpu_configuration"] == "onednn" else "off"
    isa = f", {run['isa']}" if "isa" in run else ""  # recorded since 2026-12-02
    return (f"| {run['machine']}, {run['cores']} cores | {name} (oneDNN {onednn}{isa}) | "
            f"{run['policy']} | {worst('forward_over_own')} / {worst('train_over_own')} | "
            f"{worst('choice_forward_over_own')} / {worst('choice_train_over_own')} | "
            f"{worst('rule_forward_over_own')} / {worst('rule_train_over_own')} | "
            f"{worst('forward_over_torch')} / {worst('train_over_torch')} | "
            f"{timed} / {max(entry['tuning_s'] for entry in summary):.1f} s |")


HEADER = ("| machine | configuration | policy | tuned auto / our fastest (fwd / train) "
          "| tuned choice's row / our fastest | rule / our fastest | tuned auto / PyTorch "
          "| tuning, slowest case: timing / first call |")
RULE = "|---|---|---|---|---|---|---|---|"


def main(paths):
    print(HEADER)
    print(RULE)
    for path in paths:
        for name, run in runs(path):
            print(row(name, run))


if __name__ == "__main__":
    main(sys.argv[1:])
