"""Measured "auto"'s cache: what it remembers, where, and for which environment.

Also what becomes of a cache file that is corrupt, of an older format, written
at once by several processes, or unwritable.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

import reference
from markers import op_only
from tf_conv3dt.ops import lowerings, tuning
from tuning_calls import call_inputs, run_auto


@op_only
def test_the_cache_file_serves_a_new_process_and_keeps_every_entry(tuning_on, measurements):
    x, kernel = call_inputs()
    run_auto(x, kernel)
    run_auto(x[:, :3], kernel)
    assert len(measurements) == 2
    content = json.loads(open(tuning.current_cache().path).read())
    assert content["environment"] == tuning.environment()
    assert len(content["choices"]) == 2
    winners = {key: (d.forward, d.gradient, d.seconds) for key, d in tuning.current_cache().memory.items()}
    assert all(0 < seconds < 60 for *_, seconds in winners.values()), winners
    tuning.forget()  # as a new process starts
    run_auto(x, kernel)
    run_auto(x[:, :3], kernel)
    assert len(measurements) == 2, "a cached configuration was timed again"
    assert {key: (d.forward, d.gradient, d.seconds)
            for key, d in tuning.current_cache().memory.items()} == winners
    assert {d.source for d in tuning.current_cache().memory.values()} == {"cache"}


@op_only
@pytest.mark.parametrize("field", ["tensorflow", "device", "cpu_configuration"])
def test_a_cache_from_another_environment_is_never_used(tuning_on, measurements,
                                                        monkeypatch, field):
    x, kernel = call_inputs()
    run_auto(x, kernel)
    path = tuning.current_cache().path
    content = json.loads(open(path).read())
    for decision in content["choices"].values():
        decision["forward"] = "native" if decision["forward"] != "native" else "gemm"
    content["environment"][field] = "another"
    with open(path, "w") as f:  # the same name, another environment inside
        json.dump(content, f)
    tuning.forget()
    run_auto(x, kernel)
    assert len(measurements) == 2
    # And another environment's file has another name.
    real = tuning.environment()
    monkeypatch.setattr(tuning.cache, "environment", lambda: {**real, field: "another"})
    assert tuning.current_cache().path != path


@op_only
@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"format": 1}', "\x00\xff garbage",
                                     '{"format": 1, "environment": null, "choices": {}}'])
def test_a_corrupt_cache_is_ignored_and_replaced(tuning_on, measurements, caplog, content):
    os.makedirs(tuning_on, exist_ok=True)
    with open(tuning.current_cache().path, "w", errors="surrogateescape") as f:
        f.write(content)
    x, kernel = call_inputs()
    with caplog.at_level(logging.WARNING, logger="tf_conv3dt"):
        y = run_auto(x, kernel)
    assert len(measurements) == 1
    assert any(tuning.current_cache().path in r.getMessage() for r in caplog.records)
    assert len(json.loads(open(tuning.current_cache().path).read())["choices"]) == 1
    reference.assert_close(y, reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2),
                                                            padding="same"))


@op_only
def test_a_cache_of_an_older_format_is_not_used(tuning_on, measurements, caplog):
    """Format 1 had no timed block: its entries are timed again, even in
    this environment, and the warning names the format."""
    x, kernel = call_inputs()
    run_auto(x, kernel)
    path = tuning.current_cache().path
    content = json.loads(open(path).read())
    content["format"] = 1
    for decision in content["choices"].values():
        del decision["spatial"]
    with open(path, "w") as f:
        json.dump(content, f)
    tuning.forget()
    with caplog.at_level(logging.WARNING, logger="tf_conv3dt"):
        run_auto(x, kernel)
    assert len(measurements) == 2
    assert any(f"has format 1, not {tuning.FORMAT}" in r.getMessage() for r in caplog.records)
    assert json.loads(open(path).read())["format"] == tuning.FORMAT


@op_only
@pytest.mark.parametrize("role", ["forward", "gradient"])
def test_a_choice_that_names_no_lowering_is_not_run(tuning_on, measurements, role):
    x, kernel = call_inputs()
    run_auto(x, kernel)
    path = tuning.current_cache().path
    content = json.loads(open(path).read())
    for decision in content["choices"].values():
        decision[role] = "os.system"
    with open(path, "w") as f:
        json.dump(content, f)
    tuning.forget()
    run_auto(x, kernel)
    assert len(measurements) == 2
    assert getattr(next(iter(tuning.current_cache().memory.values())), role) in lowerings.names(auto=True)


WRITER = textwrap.dedent("""
    import sys
    from tf_conv3dt.ops import tuning
    for i in range(int(sys.argv[2])):
        key = (sys.argv[1], i)
        tuning.current_cache().store(tuning.Decision(key, "gemm", "gemm", {"gemm": (1.0, 2.0)},
                                                     2, (4, 4, 4), 1.5, "measured"))
""")


@op_only
def test_concurrent_writers_never_corrupt_the_file_or_lose_an_entry(tuning_on):
    os.makedirs(tuning_on, exist_ok=True)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, f"writer{w}", "15"],
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
               for w in range(3)]
    seen = 0
    try:
        while any(w.poll() is None for w in writers):
            if not os.path.exists(tuning.current_cache().path):
                time.sleep(0.05)  # the writers still import TensorFlow: leave them the CPU
                continue
            with open(tuning.current_cache().path) as f:  # as often as it can: a reader never sees a part
                json.load(f)
            seen += 1
    finally:
        for w in writers:
            w.wait(timeout=120)
    assert [w.returncode for w in writers] == [0, 0, 0]
    choices = json.loads(open(tuning.current_cache().path).read())["choices"]
    assert sorted(choices) == sorted(json.dumps([f"writer{w}", i])
                                     for w in range(3) for i in range(15))
    assert not [name for name in os.listdir(tuning_on) if name.endswith(".tmp")]
    assert seen


@op_only
def test_an_unwritable_cache_keeps_the_choice_in_memory(tuning_on, measurements, caplog):
    with open(tuning_on.parent / "cache", "w") as f:  # a file where the directory goes
        f.write("")
    x, kernel = call_inputs()
    with caplog.at_level(logging.WARNING, logger="tf_conv3dt"):
        run_auto(x, kernel)
        run_auto(x, kernel)
    assert len(measurements) == 1
    assert any("could not write the tuning cache" in r.getMessage() for r in caplog.records)
