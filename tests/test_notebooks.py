"""The Colab tutorials: numbered, stored without outputs, linked from one
repository URL, and run top to bottom under each Keras flavour they support,
drawing their pictures and passing their own asserts."""

import glob
import json
import os
import re

import pytest

from tf_conv3dt._keras import LEGACY_KERAS

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))
FLAVOUR = "tf_keras" if LEGACY_KERAS else "keras3"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def _read(path):
    """The notebook as nbformat reads it (a dict with attribute access)."""
    import nbformat  # the notebooks extra: only the tests that read cells need it

    return nbformat.read(path, as_version=4)


def _repository():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", url)
    assert match, f"Colab opens notebooks from GitHub; the repository URL is {url!r}"
    return url, match.group(1)


def _colab_link(path):
    return (f"https://colab.research.google.com/github/{_repository()[1]}/blob/main/colab/"
            f"{os.path.basename(path)}")


def _flavours(path):
    """The Keras flavours a notebook runs under (its metadata: plain JSON, read
    while collecting, so that a job without the notebooks extra collects)."""
    with open(path) as f:
        return json.load(f)["metadata"]["tf_conv3dt"]["keras"]


def test_notebooks_are_numbered_and_name_their_keras_flavours():
    names = [os.path.basename(path) for path in NOTEBOOKS]
    assert [name[:3] for name in names] == [f"{i:02d}_" for i in range(1, len(names) + 1)], names
    assert len(names) >= 4
    for path in NOTEBOOKS:
        assert _flavours(path) and set(_flavours(path)) <= {"keras3", "tf_keras"}, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_badge_and_setup_cell_use_the_declared_repository(path):
    url, _ = _repository()
    cells = _read(path).cells
    first_code = next(cell for cell in cells if cell.cell_type == "code")
    assert cells[0].cell_type == "markdown"
    assert f"[![Open In Colab]({COLAB_BADGE})]({_colab_link(path)})" in cells[0].source
    assert f'REPOSITORY = "{url}"' in first_code.source
    assert re.search(r'%pip install -q "tf_conv3dt(\[[\w,]+\])? @ git\+\{REPOSITORY\}"',
                     first_code.source), first_code.source
    assert "except ImportError:" in first_code.source  # installs only where it is missing


def test_readme_links_every_notebook():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for path in NOTEBOOKS:
        assert f"(colab/{os.path.basename(path)})" in readme, path
        assert f"({_colab_link(path)})" in readme, path


@pytest.mark.parametrize("path", [path for path in NOTEBOOKS if FLAVOUR in _flavours(path)],
                         ids=os.path.basename)
def test_notebook_runs_draws_and_checks(path, tmp_path):
    from nbclient import NotebookClient

    notebook = _read(path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code), \
        "notebooks are stored without outputs"
    assert any("assert " in cell.source for cell in code), "a notebook checks its own numbers"
    # The kernel inherits this process's environment, Keras flavour included.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in code:
        # Every cell ran (its asserts with it) ...
        assert cell.execution_count is not None, cell.source[:80]
        # ... and every cell that shows a figure produced one.
        if "plt.show()" in cell.source:
            images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
            assert images, f"no picture from: {cell.source[:80]}"
