"""The documentation's result tables, rendered from the benchmarks' and the export's JSON files.

A page asks for one with a marker line, ``<!-- table: KIND PATH [NAME] -->``
(PATH relative to the repository):

- ``benchmark FILE CONFIGURATION``: one configuration of a
  bench_conv3d_transpose.py run, every case and path, then the per-case summary;
- ``summary FILE``: a bench_conv3d_transpose.py run's worst case of each
  configuration against our fastest lowering and PyTorch, and tuning's cost;
- ``rule FILE``: the ``AUTO_RULE`` table that FILE (tf_conv3dt/ops/rule.py)
  assigns, one row per kernel/stride relation and a column per rule key;
- ``onnx FILE``: a bench_onnx.py run;
- ``groups FILE``: a bench_groups.py run;
- ``serving FILE``: a bench_serving.py run, and each lowering's worst ratio;
- ``quantization FILE``: a bench_quantization.py run, one row per TFLite file;
- ``initializer FILE``: a bench_initializer.py run, held-out Dice by epoch;
- ``xla FILE``: a bench_xla.py run, each path's forward ms by case;
- ``tuning_block FILE``: a bench_tuning_block.py run, whole size against block;
- ``export FILE``: the artifact rows of an export's report.json.

Each table opens with the run's CPU, by the id its file name holds
(``benchmarks.common.parse_result_name``), and configuration as the file
records it. ``python -m docs.tables PAGE.md``, from the repository root,
prints a page with its tables filled in.
"""

import ast
import json
import math
import os
import re
import sys

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!-- table: (\w+) (\S+)(?: (\S+))? -->$", re.MULTILINE)


def fill(markdown):
    """``markdown`` with every marker replaced by its table."""
    return MARKER.sub(lambda m: render(*m.groups()), markdown)


def render(kind, path, name=None):
    source = f"(from `{path}`)"
    if kind == "rule":
        return _rule(path)
    with open(os.path.join(ROOT, path)) as f:
        content = json.load(f)
    if kind == "export":
        return _export(content, source)
    cpu = common.parse_result_name(path).cpu
    if kind == "benchmark":
        return _benchmark(content[name], name, cpu, source)
    if kind == "summary":
        return _summary(content, cpu, source)
    if kind == "onnx":
        return _onnx(content, cpu, source)
    if kind == "groups":
        return _groups(content, cpu, source)
    if kind == "serving":
        return _serving(content, cpu, source)
    if kind == "quantization":
        return _quantization(content, cpu, source)
    if kind == "initializer":
        return _initializer(content, cpu, source)
    if kind == "xla":
        return _xla(content, cpu, source)
    if kind == "tuning_block":
        return _tuning_block(content, cpu, source)
    raise ValueError(f"unknown table kind {kind!r} in a marker for {path}")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value, spec):
    return "-" if value is None else format(value, spec)


def _benchmark(run, name, cpu, source):
    head = (f"`{cpu}`, {run['cores']} cores, TensorFlow {run['tensorflow']} "
            f"(configuration `{name}`: {run['cpu_configuration']} kernels"
            + (f", ISA class {run['isa']}" if "isa" in run else "") + f"), {run['policy']}, "
            f"{run['data_format']}, torch {run['torch']}; NumPy sgemm "
            f"{run['sgemm_gflops']:.1f} GFLOP/s {source}")
    rows = [(r["case"], r["path"], _number(r["forward_ms"], ".2f"),
             _number(r["forward_gflops"], ".1f"), _number(r["percent_sgemm"], ".0f") + "%",
             _number(r["train_ms"], ".2f"), _number(r["train_gflops"], ".1f"),
             _number(r.get("train_peak_mib"), ".0f")) for r in run["rows"]]
    summary = [(s["case"], s["auto"], _number(s["forward_over_best"], ".2f") + "x",
                _number(s["train_over_best"], ".2f") + "x",
                _number(s["forward_over_own"], ".2f") + "x",
                _number(s["train_over_own"], ".2f") + "x",
                _number(s["best_percent_sgemm"], ".0f") + "%",
                _number(s.get("peak_over_torch"), ".2f") + "x") for s in run["summary"]]
    return "\n\n".join([
        head + ":",
        _table(["case", "path", "fwd ms", "GFLOP/s", "% sgemm", "train ms", "GFLOP/s",
                "train peak MiB"], rows),
        _table(["case", "auto", "fwd / fastest path", "train / fastest path",
                "fwd / our fastest", "train / our fastest", "best % sgemm",
                "peak / PyTorch's"], summary)])


def _summary(content, cpu, source):
    """One row per configuration: the worst ratio over the cases of tuned
    ``auto`` (timed as a path of its own, and as the row of the lowering it
    chose, the same graph, or its own where it chose a pair; runs since
    2026-12-03), and of the static rule's choice, to our fastest lowering,
    of ``auto`` to PyTorch (forward / training step), and the most a case's
    tuning took: its timing (``timed_s``, in runs that record it) and the
    extra time of its first call, which holds the timing and what a first
    call costs untuned too."""
    rows = [_summary_row(name, run, cpu) for name, run in content.items()]
    return f"Worst case of each run, forward / training step {source}:\n\n" + _table(
        ["machine", "configuration", "policy", "tuned auto / our fastest (fwd / train)",
         "tuned choice's row / our fastest", "rule / our fastest", "tuned auto / PyTorch",
         "tuning, slowest case: timing / first call"], rows)


def _summary_row(name, run, cpu):
    summary = run["summary"]

    def worst(field):
        values = [entry[field] for entry in summary if entry.get(field) is not None]
        return f"{max(values):.2f}x" if values else "n/a"

    def pair(field):
        return f"{worst(f'forward_{field}')} / {worst(f'train_{field}')}"

    timed = (f"{max(entry['timed_s'] for entry in summary):.1f}"
             if "timed_s" in summary[0] else "n/a")
    onednn = "on" if run["cpu_configuration"] == "onednn" else "off"
    isa = f", {run['isa']}" if "isa" in run else ""  # recorded since 2026-12-02
    return (f"`{cpu}`, {run['cores']} cores", f"{name} (oneDNN {onednn}{isa})", run["policy"],
            pair("over_own"), f"{worst('choice_forward_over_own')} / "
            f"{worst('choice_train_over_own')}", f"{worst('rule_forward_over_own')} / "
            f"{worst('rule_train_over_own')}", pair("over_torch"),
            f"{timed} / {max(entry['tuning_s'] for entry in summary):.1f} s")


RELATIONS = {"kernel < stride": "kernel < stride on some axis",
             "kernel == stride": "kernel == stride (no overlap)",
             "stride 1": "stride 1 (dilated or not)",
             "overlapping": "strided, kernel longer than stride"}


def _rule(path):
    """The AUTO_RULE dict literal of ``path``, read without importing TensorFlow."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    rule, = (ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             and any(getattr(t, "id", None) == "AUTO_RULE" for t in node.targets))
    keys = list(rule)
    return _table(["kernel / stride", *(f"`{key}`" for key in keys)],
                  [(label, *(rule[key][relation] for key in keys))
                   for relation, label in RELATIONS.items()])


def _onnx(content, cpu, source):
    head = (f"{content['date']}, `{cpu}`, {content['cores']} cores; ONNX Runtime "
            f"{content['onnxruntime']} CPU provider on {content['threads']} threads, "
            f"TensorFlow {content['tensorflow']}, opset {content['opset']}; median of "
            f"{content['repeats']} runs in {content['rounds']} interleaved rounds {source}")
    rows, ratios = [], []
    for r in content["rows"]:
        ratio = r["ms"]["native"] / r["ms"]["gemm"]
        ratios.append(ratio)
        rows.append((r["configuration"], r["batch"], f"{r['ms']['native']:.2f}",
                     f"{r['ms']['gemm']:.2f}", f"{ratio:.2f}"))
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    faster = sum(ratio >= 1 for ratio in ratios)
    return "\n\n".join([
        head + ":",
        _table(["configuration", "batch", "ConvTranspose (native) ms", "MatMul (gemm) ms",
                "native / gemm"], rows),
        f"The MatMul form as fast or faster on {faster} of {len(ratios)} rows; geometric "
        f"mean of native / gemm {mean:.2f}x."])


def _groups(content, cpu, source):
    paths = ("auto", "native", "gemm", "subpixel", "torch")
    policy = content.get("policy", "float32")  # runs before --policy were float32
    training = (f" ({content['train_repeats']} for the training step)"
                if "train_repeats" in content else "")
    head = (f"{content['date']}, `{cpu}`, {content['cores']} cores, TensorFlow "
            f"{content['tensorflow']}, {policy}; median of {content['repeats']} rounds"
            f"{training}, forward / training step ms {source}")
    rows = [(r["configuration"], tuple(r["input_shape"]), r["groups"],
             *(f"{_number(r[p]['forward_ms'], '.1f')} / {_number(r[p]['train_ms'], '.1f')}"
               for p in paths)) for r in content["rows"]]
    return head + ":\n\n" + _table(
        ["configuration", "input", "groups", "auto", "native", "gemm", "subpixel",
         "PyTorch"], rows)


def _tuning_block(content, cpu, source):
    # Runs before tuning split the forward from the gradient recorded the
    # winner over both steps and the fastest forward ("winner").
    key, chosen = (("choice", "lowerings chosen for the forward / the gradient") if
                   "choice" in content["rows"][0]["whole"] else
                   ("winner", "winners over forward plus training step / forward alone"))
    head = (f"{content['date']}, `{cpu}` (ISA class {content['isa']}), "
            f"{content['cores']} cores, TensorFlow {content['tensorflow']} "
            f"({content['cpu_configuration']}), {content['dtype']}; tuning.measure.lowerings at "
            f"each size, {chosen}, and the block's timed at the whole size against its "
            f"fastest {source}")
    rows = [(r["case"], f"{r['whole']['seconds']:.2f}", "/".join(r["whole"][key]),
             str(tuple(r["block"]["spatial"])), f"{r['block']['seconds']:.2f}",
             "/".join(r["block"][key]),
             f"{r['block_choice_over_fastest']:.2f}x / "
             f"{r['block_forward_choice_over_fastest']:.2f}x") for r in content["rows"]]
    return head + ":\n\n" + _table(
        ["case", "whole s", "whole's winners", "block", "block s", "block's winners",
         "block's at the whole size"], rows)


def _serving(content, cpu, source):
    lowerings = ("native", "gemm", "subpixel")
    head = (f"{content['date']}, `{cpu}` (ISA class {content['isa']}), "
            f"{content['cores']} cores, TensorFlow {content['tensorflow']}; the SavedModel's "
            f"serving_default signature, median ms of {content['repeats']} interleaved "
            f"rounds, and each lowering over the fastest {source}")
    rows = []
    for configuration, run in content["configurations"].items():
        for model, batches in run["rows"].items():
            for batch, times in batches.items():
                fastest = min(times.values())
                rows.append((configuration, model, batch, *(
                    f"{times[name]:.2f} ({times[name] / fastest:.2f}x)" for name in lowerings)))
    worst = ", ".join(f"{name} {content['worst'][name]:.2f}x" for name in sorted(
        lowerings, key=content["worst"].get))
    return "\n\n".join([
        head + ":",
        _table(["configuration", "model", "batch", *lowerings], rows),
        f"Worst ratio to the fastest lowering over every row: {worst}."])


def _quantization(content, cpu, source):
    arguments = content["arguments"]
    head = (f"{content['date']}, `{cpu}` (ISA class {content['isa']}), "
            f"{content['cores']} cores, TensorFlow {content['tensorflow']}, tf_keras, tfmot "
            f"{content['tfmot']}; {arguments['train']} training volumes, "
            f"{arguments['held_out']} held out, {arguments['epochs']} epochs, each variant "
            f"{arguments['fine_tune_epochs']} more per stage; the float Keras model's held-out "
            f"Dice {content['keras_dice']:.4f} {source}")
    rows = [(name, f"{row['dice']:.4f}", f"{row['gzip_kib']:.1f}", f"{row['litert_ms']:.2f}",
             " ".join(row["float_compute_ops"]) or "none")
            for name, row in content["rows"].items()]
    return "\n\n".join([head + ":", _table(
        ["file", "held-out Dice", "gzip KiB", "LiteRT ms", "float compute ops"], rows)])


def _initializer(content, cpu, source):
    arguments = content["arguments"]
    runs = content["held_out_dice_by_epoch"]
    head = (f"{content['date']}, `{cpu}` (ISA class {content['isa']}), "
            f"{content['cores']} cores, TensorFlow {content['tensorflow']}; tutorial 2's U-Net "
            f"with k4 s2 up-sampling, {arguments['train']} training volumes, "
            f"{arguments['held_out']} held out, "
            f"seeds {', '.join(map(str, arguments['seeds']))}; mean (lowest, highest) held-out "
            f"Dice over the seeds {source}")
    rows = []
    for name, by_seed in runs.items():
        by_epoch = list(zip(*by_seed.values()))
        rows.append((name, *(f"{sum(v) / len(v):.3f} ({min(v):.3f}, {max(v):.3f})"
                             for v in by_epoch)))
    epochs = len(rows[0]) - 1
    return "\n\n".join([head + ":", _table(
        ["initializer", *(f"epoch {epoch + 1}" for epoch in range(epochs))], rows)])


def _xla(content, cpu, source):
    head = (f"{content['date']}, `{cpu}` (ISA class {content['isa']}), "
            f"{content['cores']} cores, TensorFlow {content['tensorflow']} "
            f"({content['cpu_configuration']}), {content['policy']}; forward ms, median of "
            f"{content['repeats']} interleaved rounds (2 for a path whose call takes over "
            f"2 s), PyTorch {content['torch']} in its own process {source}")
    paths = list(dict.fromkeys(path for row in content["rows"] for path in row["forward_ms"]))
    rows = [(row["case"], *(_number(row["forward_ms"].get(path), ".2f") for path in paths))
            for row in content["rows"]]
    return "\n\n".join([head + ":", _table(["case", *paths], rows)])


def _export(report, source):
    rows = []
    for row in report["artifacts"]:
        error = row.get("error") or {}
        ok = "" if "within_tolerance" not in row else ("yes" if row["within_tolerance"]
                                                      else "NO")
        rows.append((row["artifact"], f"{row['size_bytes'] / 1024:.1f}",
                     _number(error.get("max_abs"), ".2e"), _number(error.get("relative"), ".2e"),
                     _number(error.get("tolerance"), "g"), ok,
                     _number(row.get("latency_ms"), ".3f"), row.get("latency_runtime") or ""))
    baseline = report.get("tflite_baseline")
    text = [f"Model `{report['model']}`, input {tuple(report['input_shape'])} {source}:",
            _table(["artifact", "size KiB", "max abs err", "rel err", "tol", "ok",
                    "latency ms", "runtime"], rows)]
    if baseline:
        text.append(f"Native CONV_3D_TRANSPOSE TFLite baseline: {baseline['latency_ms']:.3f} ms "
                    f"({', '.join(baseline['ops'])}).")
    return "\n\n".join(text)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(fill(f.read()))
