"""The documentation's result tables, and the numbers its charts draw, from the JSON result files.

A page asks for one with a marker line, ``<!-- table: KIND ARGUMENT ... -->``
(paths relative to the repository; ``RUN`` is ``PATH:CONFIGURATION``, one
configuration of a bench_conv3d_transpose.py run):

- ``benchmark FILE CONFIGURATION``: one configuration of a
  bench_conv3d_transpose.py run, every case and path, then the per-case summary;
- ``summary FILE``: a bench_conv3d_transpose.py run's worst case of each
  configuration against our fastest lowering and PyTorch, and tuning's cost;
- ``rule FILE``: the ``AUTO_RULE`` table that FILE (tf_conv3dt/ops/rule.py)
  assigns, one row per kernel/stride relation and a column per rule key;
- ``onnx FILE``: a bench_onnx.py run;
- ``openvino FILE``: a bench_openvino.py run, each path's ms and ours over the built-in's;
- ``memory FILE``: a bench_memory.py run, each path's peak by case, forward and training step;
- ``scaling FILE``: a ``bench_memory.py --scaling`` run, each path's training-step
  peak and seconds by edge, and the largest edge at which a step completed;
- ``groups FILE``: a bench_groups.py run;
- ``serving FILE``: a bench_serving.py run, and each lowering's worst ratio;
- ``quantization FILE``: a bench_quantization.py run, one row per TFLite file;
- ``initializer FILE``: a bench_initializer.py run, held-out Dice by epoch;
- ``xla FILE``: a bench_xla.py run, each path's forward ms by case;
- ``tuning_block FILE``: a bench_tuning_block.py run, whole size against block;
- ``export FILE``: the artifact rows of an export's report.json;
- ``speedups RUN``: Keras's layer's and PyTorch's time over tuned ``auto``'s,
  forward and training step, over the run's cases (docs/charts.py draws it);
- ``gain BEFORE AFTER [BEFORE AFTER ...]``: ``auto``'s time in one run over
  its time in another, case by case (a chart too);
- ``tuning RUN [RUN ...]``: what tuning's choices gave against the rule's,
  and what tuning cost;
- ``knobs FILE``: the settings of tuning's ``Knobs`` in FILE
  (tf_conv3dt/ops/tuning/policy.py), with the first sentence of each one's
  docstring.

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
MARKER = re.compile(r"^<!-- table: (\w+) (.+?) -->$", re.MULTILINE)
# The paths each tuned ``auto`` row of a bench_conv3d_transpose.py run is compared with.
OTHERS = {"keras Conv3DTranspose": "Keras's Conv3DTranspose",
          "torch conv_transpose3d": "PyTorch"}


def fill(markdown):
    """``markdown`` with every marker replaced by its table."""
    return MARKER.sub(lambda m: render(m.group(1), *m.group(2).split()), markdown)


def render(kind, path, *arguments):
    source = f"(from `{path}`)"
    if kind == "rule":
        return _rule(path)
    if kind == "knobs":
        return _knobs(path)
    if kind == "speedups":
        return _speedups(path)
    if kind == "gain":
        return _gain([path, *arguments])
    if kind == "tuning":
        return _tuning([path, *arguments])
    content = load(path)
    if kind == "export":
        return _export(content, source)
    cpu = common.parse_result_name(path).cpu
    if kind == "benchmark":
        name, = arguments
        return _benchmark(content[name], name, cpu, source)
    if kind == "summary":
        return _summary(content, cpu, source)
    if kind == "onnx":
        return _onnx(content, cpu, source)
    if kind == "openvino":
        return _openvino(content, cpu, source)
    if kind == "memory":
        return _memory(content, cpu, source)
    if kind == "scaling":
        return _scaling(content, cpu, source)
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


def load(path):
    """The result file at ``path``, relative to the repository's root."""
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)


def load_run(spec):
    """``(path, configuration, run)`` of a ``PATH:CONFIGURATION`` argument."""
    path, configuration = spec.rsplit(":", 1)
    return path, configuration, load(path)[configuration]


def rows_by_case(run):
    """``{case: {path: row}}`` of a bench_conv3d_transpose.py run."""
    cases = {}
    for row in run["rows"]:
        cases.setdefault(row["case"], {})[row["path"]] = row
    return cases


def speedups(run):
    """``{other path: {case: (forward, training step)}}``: each of
    :data:`OTHERS`' time over tuned ``auto``'s, where both ran the case."""
    ratios = {}
    for case, paths in rows_by_case(run).items():
        auto = paths["tf_conv3dt auto"]
        for other in OTHERS:
            if other in paths:
                ratios.setdefault(other, {})[case] = tuple(
                    paths[other][step] / auto[step] for step in ("forward_ms", "train_ms"))
    return ratios


def gains(before, after):
    """``{case: (forward, training step)}``: tuned ``auto``'s time in the
    run ``before`` over its time in the run ``after``."""
    first, second = rows_by_case(before), rows_by_case(after)
    return {case: tuple(first[case]["tf_conv3dt auto"][step]
                        / second[case]["tf_conv3dt auto"][step]
                        for step in ("forward_ms", "train_ms"))
            for case in first if case in second}


def kernels(run):
    """What a run's TensorFlow ran: "oneDNN, AVX2", "Eigen"."""
    if run["cpu_configuration"] == "eigen":
        return "Eigen"
    return {"avx2": "oneDNN, AVX2", "avx512": "oneDNN, AVX-512",
            "amx": "oneDNN, AMX"}[run.get("isa", "avx2")]  # recorded since 2026-12-02


def describe(path, configuration, run):
    """``amd-epyc-f26-avx512`` ``default`` (oneDNN, AVX-512), float32."""
    return (f"`{common.parse_result_name(path).cpu}` `{configuration}` ({kernels(run)}), "
            f"{run['policy']}")


def change(first, second):
    """``(cpu, "what differs → what it became")`` between two runs, each a
    :func:`load_run`."""
    def parts(path, configuration, run):
        return (f"{configuration} ({kernels(run)})", run["policy"])

    before, after = parts(*first), parts(*second)
    differ = [i for i in range(len(before)) if before[i] != after[i]] or [0]
    return (common.parse_result_name(first[0]).cpu,
            f"{', '.join(before[i] for i in differ)} → {', '.join(after[i] for i in differ)}")


def sources(paths):
    """``from `folder/`: `a.json`, `b.json```: where a table's or chart's runs come from."""
    folder = os.path.commonpath([os.path.dirname(path) for path in paths])
    names = dict.fromkeys(os.path.relpath(path, folder) for path in paths)
    return f"from `{folder}/`: " + ", ".join(f"`{name}`" for name in names)


def _spread(values):
    """The geometric mean of ``values``, and their lowest and highest."""
    mean = math.exp(sum(map(math.log, values)) / len(values))
    return f"{mean:.2f}x ({min(values):.2f}x to {max(values):.2f}x)"


def _speedups(spec):
    path, configuration, run = load_run(spec)
    rows = [(OTHERS[other], _spread([f for f, _ in by_case.values()]),
             _spread([t for _, t in by_case.values()]))
            for other, by_case in speedups(run).items()]
    return (f"{describe(path, configuration, run)}, TensorFlow {run['tensorflow']}, PyTorch "
            f"{run['torch']}; geometric mean over the cases (lowest to highest) "
            f"(from `{path}`):\n\n"
            + _table(["their time over tuned `auto`'s", "forward", "training step"], rows))


def _gain(specs):
    runs = [load_run(spec) for spec in specs]
    rows = []
    for first, second in zip(runs[::2], runs[1::2]):
        ratios = gains(first[2], second[2]).values()
        rows.append((f"`{change(first, second)[0]}`", change(first, second)[1],
                     _spread([f for f, _ in ratios]), _spread([t for _, t in ratios])))
    return ("Tuned `auto`'s time in the first configuration over its time in the second; "
            "geometric mean over the cases (lowest to highest) "
            f"({sources([path for path, _, _ in runs])}):\n\n"
            + _table(["CPU", "first → second", "forward", "training step"], rows))


def _tuning(specs):
    runs = [load_run(spec) for spec in specs]
    rows = []
    for path, configuration, run in runs:
        summary = run["summary"]

        def mean(field):
            values = [entry[field] for entry in summary]
            return f"{math.exp(sum(map(math.log, values)) / len(values)):.3f}"

        def most(field, scale=1):
            return f"{max(entry[field] for entry in summary) * scale:.1f}"

        rows.append((f"`{common.parse_result_name(path).cpu}` `{configuration}`, "
                     f"{run['policy']}",
                     f"{mean('choice_forward_over_own')} / {mean('choice_train_over_own')}",
                     f"{mean('rule_forward_over_own')} / {mean('rule_train_over_own')}",
                     f"{most('timed_s')} / {most('tuning_s')}", most("cache_hit_s", 1e3)))
    return ("The lowering tuning chose, and the rule's, each timed as a lowering of its own, "
            "over our fastest lowering (geometric mean over the cases, forward / training "
            "step), and what tuning cost at most on one case: its timing, the first call's "
            "extra time, and a new process finding the choice in the cache "
            f"({sources([path for path, _, _ in runs])}):\n\n"
            + _table(["run", "tuned", "rule", "timing / first call, s", "cache hit ms"], rows))


def _knobs(path):
    """``Knobs``' fields in ``path``, read without importing TensorFlow."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    knobs, = (node for node in tree.body if isinstance(node, ast.ClassDef)
              and node.name == "Knobs")
    rows = []
    for field, doc in zip(knobs.body, knobs.body[1:]):
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr):
            text = re.sub(r":\w+:", "", " ".join(doc.value.value.split())).replace("``", "`")
            first = re.split(r"(?<=[.:])\s", text, maxsplit=1)[0].rstrip(".:")
            rows.append((f"`{field.target.id}`", ast.unparse(field.value), first))
    return (f"Tuning's settings, `tf_conv3dt.ops.tuning.policy.KNOBS` (from `{path}`):\n\n"
            + _table(["setting", "value", "what it is"], rows))


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


def _openvino(content, cpu, source):
    head = (f"{content['date']}, `{cpu}`, {content['cores']} cores; OpenVINO "
            f"{content['openvino']} CPU plugin in {content['precision']} on "
            f"{content['threads']} threads, TensorFlow {content['tensorflow']}; median of "
            f"{content['repeats']} runs in {content['rounds']} interleaved rounds {source}")
    paths = list(content["rows"][0]["ms"])
    rows = [(r["case"], r["batch"], *(f"{r['ms'][path]:.2f}" for path in paths),
             f"{r['ir_lowering']} {r['ir_over_builtin']:.2f}") for r in content["rows"]]
    worst = max(r["ir_over_builtin"] for r in content["rows"])
    mean = math.exp(sum(math.log(r["ir_over_builtin"]) for r in content["rows"])
                    / len(content["rows"]))
    return "\n\n".join([head + ":", _table(
        ["case", "batch", *(f"{path} ms" for path in paths), "the IR's lowering / built-in"],
        rows), f"The IR's lowering over the built-in: at worst {worst:.2f}x, geometric mean "
                f"{mean:.2f}x."])


def _memory(content, cpu, source):
    parts = []
    for name, entry in content["configurations"].items():
        paths = list(dict.fromkeys(row["path"] for row in entry["rows"]))
        cases = list(dict.fromkeys(row["case"] for row in entry["rows"]))
        peaks = {(row["case"], row["path"]): row for row in entry["rows"]}

        def cell(case, path):
            row = peaks.get((case, path))
            if row is None:
                return "-"
            return " / ".join("failed" if "failed" in row[step] else
                              f"{row[step]['peak_mib']:.0f}" for step in ("forward", "train"))

        parts += [f"{content['date']}, `{cpu}`, configuration `{name}`; peak resident "
                  f"memory growth in MiB, forward / training step, each in a fresh process "
                  f"{source}:",
                  _table(["case", *paths], [(case, *(cell(case, path) for path in paths))
                                            for case in cases])]
    return "\n\n".join(parts)


def memory_ratios(run):
    """``{path: {case: (forward, training step)}}``: each path's peaks over
    PyTorch's in one configuration of a bench_memory.py run (``run``);
    cases where a step failed are left out."""
    peaks = {}
    for row in run["rows"]:
        if all("peak_mib" in row[step] for step in ("forward", "train")):
            peaks.setdefault(row["path"], {})[row["case"]] = tuple(
                row[step]["peak_mib"] for step in ("forward", "train"))
    torch = peaks.pop("torch conv_transpose3d")
    return {path: {case: tuple(ours / theirs for ours, theirs in zip(pair, torch[case]))
                   for case, pair in by_case.items() if case in torch}
            for path, by_case in peaks.items()}


def scaling_rows(run):
    """``{stage: {path: {edge: row}}}`` of a ``bench_memory.py --scaling`` configuration."""
    stages = {}
    for row in run["scaling"]:
        stages.setdefault(row["stage"], {}).setdefault(row["path"], {})[row["edge"]] = row
    return stages


def _scaling(content, cpu, source):
    parts = []
    for name, entry in content["configurations"].items():
        for stage, by_path in scaling_rows(entry).items():
            edges = sorted({edge for by_edge in by_path.values() for edge in by_edge})

            def cell(path, edge):
                row = by_path[path].get(edge)
                if row is None:
                    return "-"
                if "failed" in row:
                    return f"failed: {row['failed']}"
                return f"{row['peak_mib']:.0f} / {row['seconds']:.1f}"

            edges_reached = entry["largest_trainable_edge"]
            largest = ", ".join(f"{path} {edges_reached.get(f'{stage} | {path}', '-')}"
                                for path in by_path)
            parts += [f"{content['date']}, `{cpu}`, configuration `{name}`, stage {stage} "
                      f"(batch 1, 32 -> 16 channels, input edge^3); training step: peak "
                      f"resident memory growth in MiB / seconds, each in a fresh process, "
                      f"killed past {content['memory_limit_gib']:g} GiB or "
                      f"{content['timeout_s']:g} s {source}:",
                      _table(["edge", *by_path], [(edge, *(cell(path, edge) for path in by_path))
                                                   for edge in edges]),
                      f"Largest edge at which a training step completed: {largest}."]
    return "\n\n".join(parts)


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
