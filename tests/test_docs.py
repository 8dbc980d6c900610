"""The documentation site builds strictly from docstrings and result files; the README fronts it."""

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
         "tutorials", "api")

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
    # No marker is left: every table was filled in.
    for page in PAGES:
        html = (tmp_path / "site" / ("" if page == "index" else page) / "index.html").read_text()
        assert "<!-- table:" not in html, page


def test_an_undocumented_public_name_fails_the_build(tmp_path):
    """The build refuses a public name that the API reference leaves out."""
    for name in ("docs", "tf_conv3dt", "benchmarks"):
        shutil.copytree(os.path.join(ROOT, name), tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "mkdocs.yml"), tmp_path)
    api = tmp_path / "docs" / "api.md"
    api.write_text(api.read_text().replace("::: tf_conv3dt.examples.dice\n", ""))
    done = _build(tmp_path, tmp_path / "site")
    assert done.returncode != 0
    assert "tf_conv3dt.examples.dice has no '::: tf_conv3dt.examples.dice' block" in (
        done.stdout + done.stderr), done.stdout + done.stderr


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
