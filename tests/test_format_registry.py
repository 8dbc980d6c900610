"""The registry of export formats: a format registered from outside the library is exported.

The export stages, verifies, publishes and reports it, and its command offers
it, with no library file edited.
"""

import glob
import json
import os

import numpy as np
import pytest

from tf_conv3dt import export
from tf_conv3dt.export import formats
from tf_conv3dt.export.formats import Format
from tf_conv3dt.export.report import EXACT, Row, error_metrics
from exports import run_cli

FILE = "model.txt"


class LargestOutput(Format):
    """A toy format: the Keras output's largest value on the verification
    inputs, as text (plus ``offset``, to miss the tolerance); verified by
    reading it back."""

    name = "largest_output"

    def __init__(self, offset=0.0):
        self.offset = offset

    def stage(self, run):
        run.step(f"writing {FILE}")
        with open(run.staging.path_of(FILE), "w") as f:
            f.write(repr(float(run.expected.max()) + self.offset))
        yield FILE

    def verify(self, run, staged):
        with open(run.staging.path_of(staged)) as f:
            written = float(f.read())
        return [Row(artifact=self.name, path=os.path.join(run.job.out_dir, FILE),
                    size_bytes=run.staging.size_of(staged), staged=staged,
                    error=error_metrics(np.array(written), run.expected.max(), **EXACT))]

    def notes(self, report):
        return [f"{row['artifact']}: {row['path']}" for row in report["artifacts"]
                if row["artifact"] == self.name]


class NeedsAPackage(LargestOutput):
    """The same, from a package that is not installed (as OpenVINO's may not be)."""

    name = "needs_a_package"
    packages = ("tf_conv3dt_no_such_package",)
    extra = "no_such_extra"


@pytest.fixture
def registered(request):
    """The toy format (``request.param``, else :class:`LargestOutput`)
    registered for one test; the next test finds the registry as it was."""
    with formats.registered(getattr(request, "param", LargestOutput())) as format_:
        yield format_
    assert format_.name not in formats.names()


def test_the_command_offers_exports_and_reports_a_registered_format(registered, tmp_path,
                                                                    capsys):
    code, text, _ = run_cli(capsys, "--help")
    assert code == 0 and "largest_output" in text
    code, out, err = run_cli(capsys, "--out", str(tmp_path), "--formats", "keras,largest_output")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.endswith(f"] writing {FILE}") for line in lines), out
    assert f"largest_output: {tmp_path / FILE}" in lines, out
    report = json.load(open(tmp_path / "report.json"))
    assert report["published"] and [row["artifact"] for row in report["artifacts"]] == [
        "keras", "largest_output"]
    (row,) = [row for row in report["artifacts"] if row["artifact"] == "largest_output"]
    assert row["within_tolerance"] and row["error"]["max_abs"] == 0.0
    assert row["path"] == str(tmp_path / FILE) and float((tmp_path / FILE).read_text()) > 0
    assert sorted(os.listdir(tmp_path)) == sorted([FILE, "model.keras", "report.json"])


@pytest.mark.parametrize("registered", [LargestOutput(offset=1.0)], indirect=True)
def test_a_registered_format_over_its_tolerance_publishes_nothing(registered, tmp_path, rng):
    calibration = rng.uniform(size=(4, 10, 8, 12, 128)).astype("float32")
    report = export.export_model(export.reference_model(), str(tmp_path),
                                 formats=["largest_output"], calibration=calibration)
    assert not report["published"] and not report["all_within_tolerance"]
    assert report["artifacts"][0]["error"]["max_abs"] == pytest.approx(1.0)
    assert os.listdir(tmp_path) == ["report.json"]
    assert not glob.glob(str(tmp_path / ".writing-*"))


@pytest.mark.parametrize("registered", [NeedsAPackage()], indirect=True)
def test_a_format_whose_package_is_missing_is_refused_before_anything_is_written(
        registered, tmp_path, capsys):
    """As the onnx format is where its extra is missing: the error names the
    argument (the flag, on the command line), the package and the extra."""
    with pytest.raises(export.ExportError) as raised:
        export.export_model(export.reference_model(), str(tmp_path / "out"),
                            formats="keras,needs_a_package")
    assert raised.value.argument == "formats"
    assert raised.value.problem == (
        "needs_a_package needs tf_conv3dt_no_such_package: pip install "
        "'tf_conv3dt[no_such_extra]', or leave needs_a_package out")
    code, _, err = run_cli(capsys, "--quiet", "--out", str(tmp_path / "out"), "--formats",
                           "needs_a_package")
    assert code == 2 and err.startswith(
        "error: --formats 'needs_a_package': needs_a_package needs tf_conv3dt_no_such_package")
    assert not (tmp_path / "out").exists()


def test_the_registry_refuses_a_second_format_of_a_name_and_what_is_no_format():
    with pytest.raises(ValueError, match="'keras' is already registered"):
        formats.register(formats.get("keras").__class__())
    with pytest.raises(TypeError, match="a Format"):
        formats.register("keras")
    assert formats.names() == ("keras", "savedmodel", "tflite", "onnx", "openvino")
