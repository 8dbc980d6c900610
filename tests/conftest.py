import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import cpu_pin
import markers
import lowerings
from lowerings import LOWERINGS
from tf_conv3dt import export
from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.ops import tuning
from tf_conv3dt.ops.tuning import measure

# By default "auto" times every static call it meets on a CPU (ops/tuning.py).
# The suite checks each lowering itself, and test_tuning_*.py the timing; everywhere
# else the rule decides, whatever the caller's environment says, so that no
# test's time or path depends on a measurement, and nothing is written to the
# user's cache (subprocesses inherit both).
os.environ[tuning.ENV_AUTOTUNE] = "0"
os.environ[tuning.ENV_CACHE_DIR] = tempfile.mkdtemp(prefix="tf_conv3dt-tuning-")


# The tests that take a minute or more: first, so that pytest-xdist (which
# hands tests out in collection order) never gives one of them to a worker
# when the others are about to finish.
LONGEST_FIRST = ("tests/test_notebooks.py::test_notebook_runs",
                 "tests/test_differential.py::test_under_the_other_onednn_setting",
                 "tests/test_cpu_pinning.py::",
                 "tests/test_distribute.py::")


def pytest_configure(config):
    markers.register(config)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


def pytest_report_header(config):
    flavour = "tf_keras (TF_USE_LEGACY_KERAS=1)" if LEGACY_KERAS else "Keras 3"
    pinned = "pinned" if os.environ.get(cpu_pin.cpu.ENV_CPU_ISA) else "this machine's"
    return (f"tf_conv3dt: {flavour} {keras.__version__}, TensorFlow {tf.__version__}, "
            f"{cpu_pin.cpu.cpu_configuration()} kernels, CPU probe {cpu_pin.run_probe()} "
            f"({pinned})")


@pytest.fixture(params=LOWERINGS)
def implementation(request):
    """Every numerical test runs once for each lowering: the native op, the
    GEMM lowering in both its forms (one product per tap; one per stride
    phase, as int8 TFLite uses: "gemm_int8") and the sub-pixel lowering."""
    return lowerings.implementation(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def tuning_on(monkeypatch, tmp_path):
    """Tuning on, an empty cache directory, nothing remembered in memory."""
    monkeypatch.setenv(tuning.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "1")
    tuning.forget()
    yield tmp_path / "cache"
    tuning.set_autotune(None)
    tuning.forget()


@pytest.fixture
def measurements(monkeypatch):
    """Counts :func:`measure.lowerings` calls (each one a timing of a configuration)."""
    calls = []
    timed = measure.lowerings

    def counted(*args):
        calls.append(args)
        return timed(*args)

    monkeypatch.setattr(measure, "lowerings", counted)
    return calls


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The reference model exported once, with every default: (model, out_dir,
    report), for the export's tests to run, read and copy, never change."""
    out = str(tmp_path_factory.mktemp("export"))
    model = export.reference_model()
    with pytest.warns(UserWarning, match="synthetic"):
        report = export.export_model(model, out)
    return model, out, report


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    yield
    # Keras 3's default also runs a full garbage collection: a quarter
    # second after each of hundreds of tests, where Python's own collector
    # suffices.
    keras.backend.clear_session(**({} if LEGACY_KERAS else {"free_memory": False}))
