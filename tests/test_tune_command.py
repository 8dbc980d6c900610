"""The tune command: a row per layer, the cache filled, its errors in one line."""

import dataclasses
import json

import numpy as np
import pytest

import cpu_pin
import tf_conv3dt
from markers import cpu_sensitive
from tf_conv3dt import tune
from tf_conv3dt.ops import lowerings, select, tuning
from tuning_calls import timed_here


def _model(path, **second):
    """A saved model of two layers, built untimed (tf_keras calls them while
    building it, which would tune them)."""
    keras = tf_conv3dt.keras
    with tuning.switched(False):
        inputs = keras.Input((4, 5, 3, 2))
        x = tf_conv3dt.Conv3DTranspose(3, 3, strides=2, padding="same", name="up")(inputs)
        x = tf_conv3dt.Conv3DTranspose(2, 2, strides=1, name="fixed", **second)(x)
        keras.Model(inputs, x).save(path)
    return path


def _tune(capsys, *args):
    """The tune command's (exit status, stdout, stderr), run in this process
    (tests/test_packaging.py runs the installed command)."""
    status = tune.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


@cpu_sensitive
def test_tune_command_prints_a_row_per_layer_and_fills_the_cache(tuning_on, tmp_path, capsys,
                                                                 monkeypatch):
    """Under oneDNN on AMX, pinned: every lowering is a candidate there."""
    cpu_pin.pin(monkeypatch, "onednn", "amx")
    path = _model(str(tmp_path / "model.keras"), implementation="native")
    status, out, err = _tune(capsys, path, "--batch-size", 3, "--policy", "mixed_bfloat16")
    assert status == 0, err[-3000:]
    rows = {line.split(":")[0]: line for line in out.splitlines()
            if line.startswith(("up:", "fixed:"))}
    assert rows["fixed"] == "fixed: not tuned, runs native"
    up = rows["up"]
    assert "bfloat16" in up and "input (4, 5, 3, 2) at batch 3" in up, up
    times = up.split("| ms forward/gradient: ")[1].split(" | ")[0]
    names = {t.split()[0] for t in times.split("  ")}
    # Each lowering, and where the times proposed one, a pair ("native+gemm").
    assert {n for n in names if "+" not in n} == set(timed_here()), up
    assert all(n.split("+")[0] in lowerings.names(auto=True) for n in names), up
    # Each timed lowering's estimated peak, at the batch it was timed at.
    estimated = up.split("| estimated training-step peak MiB: ")[1].split(" | ")[0]
    (decision,) = tuning.current_cache().memory.values()
    call = dataclasses.replace(decision.call, input_shape=(3, *decision.call.input_shape[1:]))
    assert estimated == "  ".join(
        f"{name} {lowerings.get(name).memory(call) / 2**20:.0f}" for name in decision.ms
        if "+" not in name), up
    # Each timed lowering's measured peak (Linux lets a process read it).
    assert set(decision.peaks) == {n for n in decision.ms if "+" not in n}, up
    assert all(peak >= 0 for peak in decision.peaks.values()), decision.peaks
    measured = up.split("| measured on the timed input: ")[1].split(" | ")[0]
    assert measured == "  ".join(f"{name} {decision.peaks[name]:.0f}"
                                 for name in decision.ms if "+" not in name), up
    forward = up.rsplit("| ", 1)[1].split()[0]
    assert forward in lowerings.names(auto=True) and up.endswith("(measured)"), up
    choices = json.loads(open(tuning.current_cache().path).read())["choices"]
    (key,) = choices
    assert json.loads(key)[0] == "bfloat16" and json.loads(key)[2][0] is None
    assert choices[key]["forward"] == forward and choices[key]["batch"] == 3
    assert "cache: " + tuning.current_cache().path in out
    tuning.forget()  # as a new process starts: the choice comes from the file
    status, out, err = _tune(capsys, path, "--batch-size", 3, "--policy", "mixed_bfloat16")
    assert status == 0 and rows["up"].replace("(measured)", "(cache)") in out, out + err
    status, out, err = _tune(capsys, path, "--batch-size", 3, "--policy", "mixed_bfloat16",
                             "--quiet")
    assert (status, out) == (0, ""), out + err


@pytest.mark.parametrize("args,message", [
    (["missing.keras"], "error: MODEL 'missing.keras': does not exist or is not a file"),
    (["{model}", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["{model}", "--batch-size", "-2"], "expected a positive integer in ASCII digits"),
    (["{model}", "--policy", "float8"], "argument --policy: invalid choice: 'float8'"),
    (["{plain}"], "has no Conv3DTranspose layer"),
])
def test_tune_command_errors_are_one_line_exit_2(tuning_on, tmp_path, capsys, args, message):
    model = _model(str(tmp_path / "model.keras"))
    keras = tf_conv3dt.keras
    inputs = keras.Input((4, 4, 4, 2))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(str(tmp_path / "plain.keras"))
    args = [a.format(model=model, plain=tmp_path / "plain.keras") for a in args]
    try:
        status, _, err = _tune(capsys, *args)
    except SystemExit as exit_:  # argparse's own errors exit from parse_args
        status, err = exit_.code, capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


@cpu_sensitive
def test_an_untuned_depthwise_auto_layer_says_it_runs_gemms_one_call(monkeypatch):
    """On a CPU, pinned (a GPU runs the native op per channel)."""
    cpu_pin.pin(monkeypatch, "eigen", "avx2")
    layer = tf_conv3dt.Conv3DTranspose(4, 3, 2, groups=4, name="dw")
    with tuning.recording(), select.recorded() as selections:
        layer(np.zeros((1, 3, 3, 3, 4), "float32"))
    ((_, selection),) = selections
    assert tune._row(layer, selection) == "dw: not tuned, runs gemm's one call (depthwise)"
