"""The package as a user installs it: a wheel built from this tree, installed
where the source tree is not importable, its command and module run."""

import ast
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tf_conv3dt._keras import LEGACY_KERAS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    LEGACY_KERAS, reason="the wheel does not depend on the Keras flavour: the Keras 3 run "
    "builds and checks it once per CI run")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site directory holding the installed wheel, its console-scripts directory, build log)."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "out"))
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir",
                            str(work / "dist"), str(source)],
                           capture_output=True, text=True)
    log = built.stdout + built.stderr
    assert built.returncode == 0, log
    (wheel,) = (work / "dist").glob("tf_conv3dt-*.whl")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True)
    return site, site / "bin", log


def _run(installed, *command):
    """Runs a command with the installed package, TensorFlow's logging at its defaults."""
    site, _, _ = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=site.parent)


def test_wheel_builds_without_deprecation_warnings(installed):
    _, _, log = installed
    assert "deprecat" not in log.lower(), log


def test_installed_package_computes_the_reference_example(installed):
    site, _, _ = installed
    script = (
        "import numpy as np, tf_conv3dt, sys\n"
        "assert tf_conv3dt.__file__.startswith(sys.argv[1]), tf_conv3dt.__file__\n"
        "x = np.random.default_rng(0).uniform(size=(2, 3, 2, 4, 5)).astype('float32')\n"
        "layer = tf_conv3dt.Conv3DTranspose(3, 2, 2, use_bias=False)\n"
        "np.save(sys.argv[2], np.asarray(layer(x)))\n"
        "np.save(sys.argv[3], layer.kernel.numpy())\n"
        "np.save(sys.argv[4], x)\n")
    paths = [str(site.parent / name) for name in ("y.npy", "kernel.npy", "x.npy")]
    done = _run(installed, sys.executable, "-c", script, str(site), *paths)
    assert done.returncode == 0, done.stderr
    y, kernel, x = (np.load(path) for path in paths)
    # Kernel 2 == stride 2: every output voxel is one input voxel times one tap.
    expected = np.einsum("ndhwc,ijkfc->ndihjwkf", x, kernel).reshape(2, 6, 4, 8, 3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("command", ["tf-conv3dt-export", "python -m tf_conv3dt_cli export",
                                     "python -m tf_conv3dt.export"])
def test_installed_export_command_runs(installed, tmp_path, command):
    _, scripts, _ = installed
    argv = ([str(scripts / "tf-conv3dt-export")] if command == "tf-conv3dt-export"
            else [sys.executable, *command.split()[1:]])
    shown = _run(installed, *argv, "--help")
    assert shown.returncode == 0 and "130" in shown.stdout, shown.stderr
    if command != "tf-conv3dt-export":
        return  # the same main(); one export run shows it works installed
    done = _run(installed, *argv, "--out", str(tmp_path), "--formats", "keras")
    assert done.returncode == 0, done.stderr
    assert os.path.isfile(tmp_path / "model.keras") and os.path.isfile(tmp_path / "report.json")
    # Its own lines only: no line of TensorFlow's C++ start-up log on either stream.
    assert done.stderr.splitlines() == [
        "warning: No calibration data given: int8 TFLite is calibrated on synthetic uniform "
        "[0, 1) inputs; pass calibration data for real ranges."], done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "importing TensorFlow and tf_conv3dt", done.stdout
    assert all(line.startswith(("[", "building", "artifact", "keras ", "all artifacts",
                                "finished")) for line in lines[1:]), done.stdout


def test_installed_tune_command_tunes_the_exported_model(installed, tmp_path):
    _, scripts, _ = installed
    shown = _run(installed, str(scripts / "tf-conv3dt-tune"), "--help")
    assert shown.returncode == 0 and "130" in shown.stdout, shown.stderr
    exported = _run(installed, str(scripts / "tf-conv3dt-export"), "--out", str(tmp_path),
                    "--formats", "keras", "--quiet")
    assert exported.returncode == 0, exported.stderr
    done = _run(installed, str(scripts / "tf-conv3dt-tune"), str(tmp_path / "model.keras"),
                "--batch-size", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (row,) = [line for line in done.stdout.splitlines() if "ms forward/gradient" in line]
    assert "input (10, 8, 12, 128) at batch 1" in row and row.endswith("(measured)"), row


def test_every_module_opens_by_stating_its_one_job():
    """Each library file's docstring opens with one sentence of its own: one
    line, at most 100 characters, that no other file's repeats."""
    openings = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tf_conv3dt", "**", "*.py"), recursive=True)
                       + [os.path.join(ROOT, "tf_conv3dt_cli.py")]):
        with open(path) as f:
            docstring = ast.get_docstring(ast.parse(f.read()))
        name = os.path.relpath(path, ROOT)
        assert docstring, f"{name} has no opening docstring"
        first, _, rest = docstring.partition("\n")
        assert first.endswith(".") and ". " not in first and len(first) <= 97, (name, first)
        assert not rest or rest.startswith("\n"), f"{name}: the opening sentence runs on"
        openings.setdefault(first, []).append(name)
    assert all(len(names) == 1 for names in openings.values()), openings
