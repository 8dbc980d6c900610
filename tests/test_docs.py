"""The documentation site builds strictly from docstrings and result files; the README fronts it."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tf_conv3dt._keras import LEGACY_KERAS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ("index", "layer", "export", "quantization", "performance", "correctness", "scaling",
         "tutorials", "api", "contributing")

pytestmark = pytest.mark.skipif(
    LEGACY_KERAS, reason="the site does not depend on the Keras flavour: the Keras 3 run "
    "builds it once per CI run")


def _build(root, site):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(site)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly_with_every_page_and_public_name(tmp_path):
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    for page in PAGES:
        assert (tmp_path / "site" / ("" if page == "index" else page) / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("tf_conv3dt.Conv3DTranspose", "tf_conv3dt.export.export_model",
                 "tf_conv3dt.quantization.quantize_model"):
        assert f'id="{name}"' in api, name
    # No marker is left: every table and chart was filled in, and each chart
    # is a file of the site.
    for page in PAGES:
        html = (tmp_path / "site" / ("" if page == "index" else page) / "index.html").read_text()
        assert "<!-- table:" not in html and "<!-- chart:" not in html, page
        for chart in re.findall(r'<img alt="[^"]*" src="\.\./(charts/[^"]+\.svg)"', html):
            assert (tmp_path / "site" / chart).read_text().startswith("<?xml"), chart
    assert "charts/speedups-" in (tmp_path / "site" / "performance" / "index.html").read_text()


def _copy_site_sources(root):
    for name in ("docs", "tf_conv3dt", "benchmarks"):
        shutil.copytree(os.path.join(ROOT, name), root / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "mkdocs.yml"), root)


def test_an_undocumented_public_name_fails_the_build(tmp_path):
    """The build refuses a public name that the API reference leaves out."""
    _copy_site_sources(tmp_path)
    api = tmp_path / "docs" / "api.md"
    api.write_text(api.read_text().replace("::: tf_conv3dt.examples.dice\n", ""))
    done = _build(tmp_path, tmp_path / "site")
    assert done.returncode != 0
    assert "tf_conv3dt.examples.dice has no '::: tf_conv3dt.examples.dice' block" in (
        done.stdout + done.stderr), done.stdout + done.stderr


def test_a_chart_whose_result_file_is_missing_fails_the_build(tmp_path):
    """A chart is drawn from its result file when the site is built: without
    the file, there is no site."""
    _copy_site_sources(tmp_path)
    run = "benchmarks/results/conv3d_transpose/intel-xeon-f6m167-amx_2026-12-04_float32-"
    page = tmp_path / "docs" / "performance.md"
    marker = f"<!-- chart: speedups {run}equal-rounds.json:default -->"
    assert marker in page.read_text()
    page.write_text(page.read_text().replace(marker, marker.replace("equal-rounds", "gone")))
    done = _build(tmp_path, tmp_path / "site")
    assert done.returncode != 0
    assert f"{run}gone.json" in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_performance_page_is_for_users():
    """At most 300 lines, and no section titled by a run's date: the runs'
    own notes are the notebook beside their files."""
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        page = f.read()
    assert len(page.splitlines()) <= 300
    assert not re.findall(r"^#+ .*\d{4}-\d\d-\d\d", page, re.MULTILINE)


def test_the_notebook_s_tables_are_the_result_files():
    """Every table the benchmark notebook asks for renders from a result file
    that is there (docs/tables.py fills them in as it does the site's)."""
    from docs import tables

    for path in glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.md")):
        with open(path) as f:
            filled = tables.fill(f.read())
        assert not tables.MARKER.search(filled), path


def test_the_onnx_table_is_the_result_file(tmp_path):
    """The performance page's ONNX table holds every row of its JSON file,
    and the share and mean it states are the file's."""
    from docs import tables

    path = "benchmarks/results/onnx/amd-epyc-avx2_2026-12-01.json"
    marker = f"<!-- table: onnx {path} -->"
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        assert marker in f.read()
    with open(os.path.join(ROOT, path)) as f:
        result = json.load(f)
    table = tables.fill(marker)
    ratios = []
    for row in result["rows"]:
        native, gemm = row["ms"]["native"], row["ms"]["gemm"]
        ratios.append(native / gemm)
        assert f"| {row['configuration']} | {row['batch']} | {native:.2f} | {gemm:.2f} |" in table
    assert f"on {sum(r >= 1 for r in ratios)} of {len(ratios)} rows" in table
    mean = float(re.search(r"geometric mean of native / gemm ([\d.]+)x", table).group(1))
    assert mean == pytest.approx(float(np.exp(np.log(ratios).mean())), abs=0.005)


def test_the_readme_is_a_front_page():
    """At most 200 lines, the two commands .ci/run reads, and a link to every page."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 200
    for marker in ("<!-- test-command -->", "<!-- oldest-tensorflow-command -->"):
        assert marker in readme
    for page in PAGES:
        if page not in ("tutorials",):  # the README has the tutorials' own table
            assert f"(docs/{page}.md)" in readme, page
