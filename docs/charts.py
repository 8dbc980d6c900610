"""The documentation's charts, drawn as SVG files when the site is built, from result files.

A page asks for one with a marker line, ``<!-- chart: KIND ARGUMENT ... -->``
(``RUN`` is ``PATH:CONFIGURATION``, as in docs/tables.py, which computes
the numbers; the table of the same marker states them):

- ``speedups RUN``: Keras's layer's and PyTorch's time over tuned ``auto``'s,
  case by case, forward and training step;
- ``gain BEFORE AFTER [BEFORE AFTER ...]``: tuned ``auto``'s time in one run
  over its time in another, case by case;
- ``memory RUN``: each path's peak memory over PyTorch's, case by case,
  forward and training step (RUN is one configuration of a bench_memory.py run);
- ``scaling FILE``: each path's training-step peak memory and seconds as
  the edge of a ``bench_memory.py --scaling`` run's stages grows;
- ``architecture``: the modules a call goes through (docs/architecture.py).

docs/hooks.py adds each to the site as ``charts/<kind>-<digest>.svg``
(:func:`charts`) and puts the image, and a line naming the files it was
drawn from, in the marker's place (:func:`fill`). A missing result file
fails the build. matplotlib draws with its Agg backend, in the tutorials'
plain style.
"""

import hashlib
import io
import posixpath
import re

import matplotlib

matplotlib.use("Agg")  # no display where the site is built
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

import architecture  # noqa: E402 - docs/ is on sys.path when MkDocs loads the hooks
import tables  # noqa: E402

MARKER = re.compile(r"^<!-- chart: (\w+)((?: \S+)*) -->$", re.MULTILINE)
STEPS = ("forward", "training step")
# Inches: about the width of the page's column, so that the text keeps its size.
WIDTH = 7.4
# A fixed salt for the ids in the SVG, so that a chart is the same file from one build to the next.
plt.rcParams["svg.hashsalt"] = "tf_conv3dt"


def charts(markdown):
    """``{site path: SVG bytes}`` of every chart ``markdown`` asks for."""
    return {_site_path(kind, arguments): _svg(kind, arguments)
            for kind, arguments in _markers(markdown)}


def fill(markdown, page):
    """``markdown`` (the page at ``page``, its path in docs/) with every
    marker replaced by its chart and the files it was drawn from."""
    def image(match):
        kind, arguments = match.group(1), match.group(2).split()
        path = posixpath.relpath(_site_path(kind, arguments), posixpath.dirname(page) or ".")
        return f"![{_ALT[kind]}]({path})\n\n{_sources(kind, arguments)}"

    return MARKER.sub(image, markdown)


def _markers(markdown):
    return [(match.group(1), match.group(2).split()) for match in MARKER.finditer(markdown)]


def _site_path(kind, arguments):
    digest = hashlib.sha1(" ".join([kind, *arguments]).encode()).hexdigest()[:10]
    return f"charts/{kind}-{digest}.svg"


def _sources(kind, arguments):
    if kind == "architecture":
        return "*Drawn from `docs/architecture.py`.*"
    return f"*Drawn {tables.sources([spec.rsplit(':', 1)[0] for spec in arguments])}.*"


def _svg(kind, arguments):
    figure = _DRAW[kind](*arguments)
    out = io.BytesIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    plt.close(figure)
    return out.getvalue()


def _case(label):
    """A case's label, shorter: ``2×16×16×16×64 → 32, k1 s2 same``."""
    shape, rest = label.split("->")
    filters, relation = rest.split(" ", 1)
    return f"{'×'.join(shape.strip('()').split(', '))} → {filters}, {relation}"


def _bars(figure, axes, cases, series):
    """One horizontal bar per case and series on each of ``axes`` (forward,
    training step), from 1x to the value, on a log scale, and the series'
    legend under them: ``series`` is ``{label: {case: (forward, training
    step)}}``."""
    values = [v for by_case in series.values() for pair in by_case.values() for v in pair]
    # Room beyond the longest bars for their labels.
    low, high = min(values + [1.0]) / 2.2, max(values + [1.0]) * 2.2
    # Powers of 2, or of 4 where they would crowd the axis.
    base = 2 if high / low < 100 else 4
    ticks = [base ** power for power in range(-4, 5) if low <= base ** power <= high]
    height = 0.8 / len(series)
    for step, axis in enumerate(axes):
        for index, (label, by_case) in enumerate(series.items()):
            for row, case in enumerate(cases):
                if case not in by_case:
                    continue
                value = by_case[case][step]
                y = row - 0.4 + height * (index + 0.5)
                axis.barh(y, value - 1, left=1, height=height * 0.9, color=f"C{index}",
                          label=label if step == 0 and case == cases[0] else None)
                axis.text(value * (1.04 if value >= 1 else 1 / 1.04), y, f"{value:.2f}x",
                          va="center", ha="left" if value >= 1 else "right",
                          fontsize=7.5 if len(series) < 3 else 6.5)
        axis.axvline(1, color="0.3", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlim(low, high)
        axis.xaxis.set_major_locator(FixedLocator(ticks))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f"{t:g}x" for t in ticks])
        axis.set_title(STEPS[step])
        axis.grid(axis="x", color="0.9")
    axes[0].set_yticks(range(len(cases)), [_case(case) for case in cases], fontsize=8.5)
    axes[0].invert_yaxis()  # the first case on top (the axes share theirs)
    figure.legend(loc="outside lower center", ncol=2 if len(series) == 2 else 1,
                  frameon=False, fontsize=9)


def _speedups(spec):
    path, configuration, run = tables.load_run(spec)
    ratios = tables.speedups(run)
    cases = list(tables.rows_by_case(run))
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 1.9 + 0.42 * len(cases)), sharey=True,
                                layout="constrained")
    _bars(figure, axes, cases,
          {tables.OTHERS[other]: by_case for other, by_case in ratios.items()})
    figure.suptitle(f"{tables.describe(path, configuration, run).replace('`', '')}\ntheir "
                    "time over tuned auto's (above 1x, auto is faster)", fontsize=10)
    return figure


def _gain(*specs):
    series, cases = {}, []
    for before, after in zip(specs[::2], specs[1::2]):
        first, second = tables.load_run(before), tables.load_run(after)
        series[": ".join(tables.change(first, second))] = tables.gains(first[2], second[2])
        cases += [case for case in tables.rows_by_case(first[2]) if case not in cases]
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 2 + 0.2 * len(series)
                                                + 0.16 * len(series) * len(cases)),
                                sharey=True, layout="constrained")
    _bars(figure, axes, cases, series)
    figure.suptitle("Tuned auto's time in the first configuration over its time in the "
                    "second\n(above 1x, the second is faster)", fontsize=10)
    return figure


def _memory(spec):
    path, configuration = spec.rsplit(":", 1)
    ratios = tables.memory_ratios(tables.load(path)["configurations"][configuration])
    cases = list(dict.fromkeys(case for by_case in ratios.values() for case in by_case))
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 1.9 + 0.16 * len(ratios) * len(cases)),
                                sharey=True, layout="constrained")
    _bars(figure, axes, cases, ratios)
    figure.suptitle(f"{tables.common.parse_result_name(path).cpu} {configuration}: peak memory "
                    "over PyTorch's (below 1x, the path holds less)", fontsize=10)
    return figure


def _scaling(path):
    configuration, run = next(iter(tables.load(path)["configurations"].items()))
    stages = tables.scaling_rows(run)
    figure, axes = plt.subplots(2, len(stages), figsize=(WIDTH, 6.2), sharex=True,
                                layout="constrained", squeeze=False)
    for column, (stage, by_path) in enumerate(stages.items()):
        for index, (name, by_edge) in enumerate(by_path.items()):
            done = sorted((edge, row) for edge, row in by_edge.items() if "failed" not in row)
            for row_index, key in enumerate(("peak_mib", "seconds")):
                axes[row_index][column].plot([edge for edge, _ in done],
                                             [row[key] for _, row in done], marker="o",
                                             markersize=3, color=f"C{index}",
                                             label=name if row_index == column == 0 else None)
        for row_index, unit in enumerate(("training-step peak, MiB", "training step, s")):
            axis = axes[row_index][column]
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_ylabel(unit if column == 0 else None)
            axis.grid(color="0.9")
        axes[0][column].set_title(stage)
        axes[1][column].set_xlabel("input edge (voxels)")
        edges = sorted({edge for by_edge in by_path.values() for edge in by_edge})
        axes[1][column].xaxis.set_major_locator(FixedLocator(edges[::2]))
        axes[1][column].xaxis.set_minor_locator(NullLocator())
        axes[1][column].set_xticklabels([str(edge) for edge in edges[::2]])
    figure.legend(loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    figure.suptitle(f"{tables.common.parse_result_name(path).cpu} {configuration}: a training "
                    "step as the volume grows (batch 1)", fontsize=10)
    return figure


_DRAW = {"speedups": _speedups, "gain": _gain, "memory": _memory, "scaling": _scaling,
         "architecture": architecture.draw}
_ALT = {"speedups": "Keras's layer's and PyTorch's time over tuned auto's, case by case",
        "gain": "Tuned auto's time in one run over its time in another, case by case",
        "memory": "Each path's peak memory over PyTorch's, case by case",
        "scaling": "Training-step peak memory and time as the volume grows, per path",
        "architecture": "The modules a call goes through, from the layer's arguments to an "
                        "exported file"}
