"""The contributing page's picture: the modules a call goes through, from arguments to export.

Each box is a step and the modules that hold it, at a place in a grid of
three columns (a call, what it consults, the export); each arrow, what one
step hands the next. docs/charts.py draws it at build time (the
``architecture`` chart), so that it follows this file, not a pasted image.
"""

# name: (column, row, title, the modules and what they do)
BOXES = {
    "layer": (0, 0, "Conv3DTranspose(...)", "layer.py, shapes.py:\nthe arguments checked"),
    "op": (0, 1, "ops.conv3d_transpose", "ops/__init__.py, call.py:\nthe call's record"),
    "select": (0, 2, "select", "ops/select.py: forced, explicit,\nrerouted, tuned, or the rule"),
    "plan": (0, 3, "plan", "ops/plan.py:\nthe output window to compute"),
    "lowering": (0, 4, "a lowering",
                 "ops/lowerings/: native, gemm,\ngemm_int8, subpixel; split.py"),
    "output": (0, 5, "the output",
               "epilogue.py: bias, activation;\ngrouped.py: one call per group"),
    "quantize": (1, 0, "quantize_model", "quantization/modes/: the mode\neach layer holds (qat, int8)"),
    "tuning": (1, 2, "tuning", "ops/tuning/: times the\nlowerings, caches the choice"),
    "rule": (1, 3, "the rule", "ops/rule.py, cpu.py:\nAUTO_RULE by CPU class"),
    "export": (2, 0, "export_model", "export/run.py, job.py, cli.py:\nthe arguments checked"),
    "stage": (2, 1, "stage each format", "export/formats/: keras,\nsavedmodel, tflite, onnx"),
    "writers": (2, 2, "the writers", "serving.py, signature.py,\ntflite.py, onnx.py"),
    "verify": (2, 3, "verify", "each format runs its files\nagainst the Keras model"),
    "publish": (2, 4, "publish", "staging.py: renamed into\nplace; report.json"),
}
# (from, to, what it hands on where that needs saying), drawn from box to box.
ARROWS = [
    ("layer", "op", ""), ("op", "select", ""), ("select", "plan", ""),
    ("plan", "lowering", ""), ("lowering", "output", ""),
    ("quantize", "layer", ""), ("tuning", "select", ""),
    ("rule", "select", ""), ("export", "stage", ""), ("stage", "writers", ""),
    ("writers", "op", "one lowering per file\n(forced_implementation)"),
    ("writers", "verify", ""), ("verify", "publish", ""),
]
COLUMNS = ("a call", "what it consults", "export")


def draw(figure_size=(7.6, 7.2)):
    """The picture, as a matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    width, height, across, down = 3.1, 1.1, 3.75, 1.5
    figure, axis = plt.subplots(figsize=figure_size)
    patches = {}
    for name, (column, row, title, modules) in BOXES.items():
        x, y = column * across, -row * down
        patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                               boxstyle="round,pad=0.02,rounding_size=0.12",
                               facecolor=("tab:blue", "tab:orange", "tab:green")[column],
                               alpha=0.15, edgecolor="0.3")
        axis.add_patch(patch)
        patches[name] = patch
        axis.text(x, y + 0.27, title, ha="center", va="center", fontsize=10.5,
                  fontweight="bold")
        axis.text(x, y - 0.15, modules, ha="center", va="center", fontsize=8.5)
    for start, end, label in ARROWS:
        (x0, y0), (x1, y1) = ((BOXES[name][0] * across, -BOXES[name][1] * down)
                              for name in (start, end))
        axis.annotate("", (x1, y1), (x0, y0), arrowprops=dict(
            arrowstyle="-|>", color="0.25", patchA=patches[start], patchB=patches[end],
            shrinkA=3, shrinkB=3, linestyle="--" if label else "-"))
        if label:
            axis.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.28, label, ha="center", va="bottom",
                      fontsize=8.5, style="italic", color="0.25")
    for column, title in enumerate(COLUMNS):
        axis.text(column * across, down * 0.55, title, ha="center", fontsize=11,
                  color="0.35")
    rows = max(row for _, row, _, _ in BOXES.values())
    axis.set_xlim(-width / 2 - 0.1, (len(COLUMNS) - 1) * across + width / 2 + 0.1)
    axis.set_ylim(-rows * down - height / 2 - 0.1, down * 0.8)
    axis.set_aspect("equal")
    axis.axis("off")
    figure.tight_layout()
    return figure
