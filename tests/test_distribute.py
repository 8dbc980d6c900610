"""tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy train the layer
as one device does, empty replica batches included (distributed_training.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import distributed_training
import two_hosts
import tf_conv3dt
from tf_conv3dt._keras import LEGACY_KERAS, keras

SCRIPT = distributed_training.__file__
TIMEOUT_S = 150
# Any port: each namespace is a host of its own, with nothing else listening.
TWO_HOSTS_PORT = 23456
NO_TWO_HOSTS = two_hosts.unavailable()  # why not, where the namespaces cannot be made


def _env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


def _onednn_env(onednn):
    return {} if onednn is None else {"TF_ENABLE_ONEDNN_OPTS": onednn}


def _where(implementation, onednn):
    """What a failure message names: the lowering and the oneDNN setting."""
    return f"implementation={implementation!r}, TF_ENABLE_ONEDNN_OPTS={onednn}"


def _results(out_dir, implementation):
    """The arrays a run saved in order (its weights), without the named extras."""
    return _results_of(os.path.join(out_dir, f"{implementation}.npz"))


def _results_of(path):
    saved = np.load(path)
    return [saved[f"arr_{i}"] for i in range(sum(f.startswith("arr_") for f in saved.files))]


def _run_mirrored(mode, implementations, tmp_path, **env):
    """Each lowering's weights after two replicas and after one device."""
    result = subprocess.run([sys.executable, SCRIPT, mode, ",".join(implementations),
                             str(tmp_path)], env=_env(**env), capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, (f"{mode} run of {implementations} failed ({env}):\n"
                                    + result.stdout[-3000:] + result.stderr[-3000:])
    split = {}
    for implementation in implementations:
        arrays = _results(tmp_path, implementation)
        split[implementation] = arrays[:len(arrays) // 2], arrays[len(arrays) // 2:]
    return split


def _check_each(implementations, onednn, check):
    """``check(implementation, where)`` for every lowering of a process; one
    failure names all the lowerings that failed and the oneDNN setting."""
    failures = []
    for implementation in implementations:
        where = _where(implementation, onednn)
        try:
            check(implementation, where)
        except AssertionError as error:
            failures.append(f"{where}: {error}")
    assert not failures, "\n".join(failures)


# Every lowering, and oneDNN on where a lowering runs its convolutions: a
# Keras model's graph knows every size but the batch, and oneDNN's graph
# rewrites (which run only in graph mode) once gave an empty batch's gradient
# the wrong shape there, on native and subpixel, on Intel Xeons by default.
# TensorFlow reads its oneDNN setting once, at start: one process per setting
# trains each of its lowerings in turn.
LOWERINGS = [
    pytest.param(("auto", "gemm"), None, id="auto-gemm"),
    pytest.param(("native", "subpixel"), "1", id="native-subpixel-onednn"),
    pytest.param(("native", "subpixel"), "0", id="native-subpixel-eigen"),
]
if LEGACY_KERAS:
    # The lowerings' gradients are the op's, the same under either flavour;
    # what tf_keras brings is its own fit and strategy handling. It runs the
    # default and the two paths whose empty-batch shapes oneDNN and Grappler
    # broke; the Keras 3 run covers every lowering.
    LOWERINGS = [pytest.param(("auto",), None, id="auto"), LOWERINGS[1]]


@pytest.mark.parametrize("implementations,onednn", LOWERINGS)
def test_mirrored_fit_with_an_empty_replica_batch_matches_one_device(
        implementations, onednn, tmp_path):
    """Two replicas, 9 samples in batches of 8: the last step gives one replica
    nothing. The oneDNN native path once failed there ("Shape mismatch in the
    collective instance"); now every path ends with one device's weights."""
    results = _run_mirrored("mirrored", implementations, tmp_path, **_onednn_env(onednn))

    def check(implementation, where):
        two, one = results[implementation]
        for a, b in zip(two, one):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=where)
        assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(
            one, distributed_training.initial_weights(keras, tf_conv3dt, implementation))), \
            "training did not move the weights"

    _check_each(implementations, onednn, check)


def test_a_killed_mirrored_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    """BackupAndRestore under MirroredStrategy, SGD with momentum: a fit
    SIGKILLed right after an epoch's backup, and one SIGKILLed mid-epoch (its
    backup an epoch old, so the epoch is trained again), each restarted in a
    new process, end with exactly the weights of a fit never interrupted."""
    processes = [(["uninterrupted", "between:epoch=2"], -signal.SIGKILL),
                 (["between", "mid:batch=5"], -signal.SIGKILL),
                 (["mid"], 0)]
    for runs, status in processes:
        result = subprocess.run([sys.executable, SCRIPT, "resume", "auto", str(tmp_path), *runs],
                                env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
        assert result.returncode == status, (runs, result.stdout[-3000:] + result.stderr[-3000:])
        if status:  # killed where its last run says: a backup there, no result
            killed = runs[-1].split(":")[0]
            assert os.listdir(tmp_path / killed) and not (tmp_path / f"{killed}.npz").exists()
    expected = _results(tmp_path, "uninterrupted")
    for name in ("between", "mid"):
        # Both restarts begin after the second epoch's backup.
        epochs = np.load(tmp_path / f"{name}.npz")["epochs"].tolist()
        assert epochs == list(range(2, distributed_training.RESUME_EPOCHS)), (name, epochs)
        resumed = _results(tmp_path, name)
        assert len(resumed) == len(expected)
        for a, b in zip(resumed, expected):
            np.testing.assert_array_equal(a, b, err_msg=f"resumed after the {name} kill")


def test_mirrored_mixed_bfloat16(tmp_path):
    two, one = _run_mirrored("mirrored-bf16", ["auto"], tmp_path)["auto"]
    for a, b in zip(two, one):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-2)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _finish(processes, timeout=TIMEOUT_S):
    """Each process's (status, log); kills whatever is still running at the end."""
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, log) for p, log in zip(processes, logs)]


def _run_workers(implementations, onednn, tmp_path, workers, launch=lambda index, argv: argv,
                 **env):
    """One MultiWorkerMirroredStrategy worker process per address of
    ``workers``, each started as ``launch(index, argv)``, each writing under
    ``tmp_path / worker<i>``; checks that both end with the same weights, which
    training moved, and that the chief's checkpoint restores into a
    single-device model."""
    out_dirs = [tmp_path / f"worker{i}" for i in range(len(workers))]
    processes = []
    for index, out_dir in enumerate(out_dirs):
        out_dir.mkdir()
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            launch(index, [sys.executable, SCRIPT, "worker", ",".join(implementations),
                           str(out_dir)]),
            env=_env(TF_CONFIG=json.dumps(config), **_onednn_env(onednn), **env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for index, (status, log) in enumerate(_finish(processes)):
        assert status == 0, (f"worker {index} ({workers[index]}) failed, "
                                   f"{implementations}, TF_ENABLE_ONEDNN_OPTS={onednn}:\n"
                                   f"{log[-3000:]}")

    def check(implementation, where):
        chief, other = (_results(out_dir, implementation) for out_dir in out_dirs)
        for a, b in zip(chief, other):
            np.testing.assert_array_equal(a, b, err_msg=where)
        initial = distributed_training.initial_weights(keras, tf_conv3dt, implementation)
        assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(chief, initial)), \
            "training did not move the weights"
        restored = distributed_training.build_model(keras, tf_conv3dt, implementation)
        checkpoint = str(out_dirs[0] / f"{implementation}.npz.ckpt")
        tf.train.Checkpoint(model=restored).read(checkpoint).assert_existing_objects_matched()
        for a, b in zip(restored.get_weights(), chief):
            np.testing.assert_array_equal(a, b, err_msg=where)

    _check_each(implementations, onednn, check)


@pytest.mark.parametrize("implementations,onednn", LOWERINGS)
def test_multi_worker_mirrored_two_processes(implementations, onednn, tmp_path):
    """Two workers on 127.0.0.1 (fit under tf_keras, a strategy.run loop under
    Keras 3), whose last step gives one worker an empty batch, end with
    identical weights, and the chief's checkpoint restores into a
    single-device model."""
    _run_workers(implementations, onednn, tmp_path,
                 [f"127.0.0.1:{port}" for port in _free_ports(2)])


def _resumable_pair(tmp_path, name, kill=None, hosts=None, vanish_marker=None):
    """Starts the two workers of resumable run ``name``, on fresh 127.0.0.1
    ports or on ``hosts`` (two_hosts.two_hosts()'s); the ``kill`` point
    (``epoch=E`` or ``batch=B``) goes to worker 1 alone, which with
    ``vanish_marker`` stops there instead (distributed_training.die).
    Returns the processes."""
    if hosts is None:
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        launch, extra = (lambda index, argv: argv), {}
    else:
        workers = [f"{address}:{TWO_HOSTS_PORT}" for _, address in hosts]
        launch = lambda index, argv: two_hosts.command(hosts[index][0], argv)  # noqa: E731
        extra = _unproxied()
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        killed = kill and index == 1
        processes.append(subprocess.Popen(
            launch(index, [sys.executable, SCRIPT, "worker-resume", "auto", str(tmp_path), name,
                           *([kill] if killed else [])]),
            env=_env(TF_CONFIG=json.dumps(config), **extra, **(
                {"VANISH_MARKER": str(vanish_marker)} if killed and vanish_marker else {})),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def _unproxied():
    """No proxy: gRPC would send the workers' traffic to one."""
    return {name: "" for name in os.environ if name.lower().endswith("_proxy")}


def _resumed_equal(tmp_path, name, expected, where, hosts=None):
    """Restarts run ``name``'s pair, which must resume from its backup after
    the second epoch and end with ``expected``'s weights, bitwise, on both."""
    statuses = _finish(_resumable_pair(tmp_path, name, hosts=hosts))
    assert [status for status, _ in statuses] == [0, 0], statuses[0][1][-3000:] + \
        statuses[1][1][-3000:]
    for index in range(2):
        saved = np.load(tmp_path / f"{name}-worker{index}.npz")
        assert saved["epochs"].tolist() == list(range(2, distributed_training.RESUME_EPOCHS))
        resumed = _results_of(tmp_path / f"{name}-worker{index}.npz")
        assert len(resumed) == len(expected)
        for a, b in zip(resumed, expected):
            np.testing.assert_array_equal(a, b, err_msg=f"worker {index}, resumed after {where}")


# How long the surviving worker may take to fail once its peer is gone (it
# took about 2 s here: the next collective finds the peer's port closed).
SURVIVOR_TIMEOUT_S = 60


def test_a_worker_killed_alone_fails_the_other_cleanly_and_the_pair_resumes(tmp_path):
    """MultiWorkerMirroredStrategy, SGD with momentum, backed up after every
    epoch (BackupAndRestore under tf_keras's fit, a CheckpointManager in Keras
    3's loop; two steps an epoch). Worker 1 is SIGKILLed right after the
    second epoch's backup, and in another run after the fifth step (the third
    epoch's first, past that backup). Each time worker 0 then fails on its
    next collective with UnavailableError well within SURVIVOR_TIMEOUT_S, not
    a hang; restarted, the pair trains the last two epochs from the backup and
    ends with the weights of a pair never interrupted, bitwise, on both."""
    statuses = _finish(_resumable_pair(tmp_path, "uninterrupted"))
    assert [status for status, _ in statuses] == [0, 0], statuses[0][1][-3000:] + \
        statuses[1][1][-3000:]
    expected = _results_of(tmp_path / "uninterrupted-worker0.npz")
    for name, kill in [("between", "epoch=2"), ("mid", "batch=5")]:
        survivor, killed = _resumable_pair(tmp_path, name, kill)
        try:
            killed.wait(timeout=TIMEOUT_S)
            assert killed.returncode == -signal.SIGKILL, (kill, killed.communicate()[0][-3000:])
            started = time.monotonic()
            (status, log), = _finish([survivor], timeout=SURVIVOR_TIMEOUT_S)
            waited = time.monotonic() - started
        finally:
            _finish([survivor, killed], timeout=1)
        assert status not in (0, None) and "UnavailableError" in log, (kill, status, log[-3000:])
        assert waited < SURVIVOR_TIMEOUT_S, kill
        assert not (tmp_path / f"{name}-worker0.npz").exists(), kill
        _resumed_equal(tmp_path, name, expected, kill)


@pytest.mark.skipif(NO_TWO_HOSTS is not None, reason=f"two network namespaces: {NO_TWO_HOSTS}")
def test_on_two_hosts_a_vanished_host_fails_the_other_cleanly_and_the_pair_resumes(tmp_path):
    """The resumable pair with each worker on its own host (two network
    namespaces, one link). After the second epoch's backup, worker 1's host
    vanishes: its link goes down and then its process is killed, so worker 0
    gets no reset and no close, only silence. Worker 0 must still fail
    within SURVIVOR_TIMEOUT_S; the link back up, the restarted pair resumes
    from the backup and ends with the uninterrupted pair's weights, bitwise."""
    with two_hosts.two_hosts() as hosts:
        statuses = _finish(_resumable_pair(tmp_path, "uninterrupted", hosts=hosts))
        assert [status for status, _ in statuses] == [0, 0], statuses[0][1][-3000:] + \
            statuses[1][1][-3000:]
        expected = _results_of(tmp_path / "uninterrupted-worker0.npz")
        marker = tmp_path / "worker1-stopped"  # beside, not in, the backup
        survivor, vanishing = _resumable_pair(tmp_path, "vanished", "epoch=2", hosts,
                                              vanish_marker=marker)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not marker.exists() and vanishing.poll() is None:
                assert time.monotonic() < deadline, "worker 1 never reached its kill point"
                time.sleep(0.2)
            assert vanishing.poll() is None, vanishing.communicate()[0][-3000:]
            two_hosts.set_link(hosts[1][0], "down")
            vanishing.kill()  # its closing packets cannot leave its host now
            started = time.monotonic()
            (status, log), = _finish([survivor], timeout=SURVIVOR_TIMEOUT_S)
            waited = time.monotonic() - started
        finally:
            _finish([survivor, vanishing], timeout=1)
        # Only the coordination service's missed heartbeats can tell it
        # (about 11 s here); no connection was ever closed.
        assert status not in (0, None) and "UnavailableError" in log and \
            "stopped sending heartbeats" in log, (status, log[-3000:])
        assert waited < SURVIVOR_TIMEOUT_S, log[-3000:]
        assert not (tmp_path / "vanished-worker0.npz").exists()
        two_hosts.set_link(hosts[1][0], "up")
        _resumed_equal(tmp_path, "vanished", expected, "a vanished host", hosts)


@pytest.mark.skipif(NO_TWO_HOSTS is not None, reason=f"two network namespaces: {NO_TWO_HOSTS}")
def test_multi_worker_mirrored_on_two_hosts(tmp_path):
    """The same training with each worker on its own host: a network
    namespace of its own, joined to the other's by one veth pair (198.18.0.1
    and .2, no default route), so the workers' collectives cross that link
    and nothing else. The namespaces are removed afterwards, whatever happened."""
    with two_hosts.two_hosts() as hosts:
        for namespace, _ in hosts:
            routes = subprocess.run(["ip", "-n", namespace, "route", "show"], check=True,
                                    capture_output=True, text=True).stdout.splitlines()
            # The link's own subnet, and no way anywhere else.
            assert len(routes) == 1 and routes[0].startswith(
                f"198.18.0.0/{two_hosts.PREFIX} dev "), routes
        _run_workers(("auto",), None, tmp_path,
                     [f"{address}:{TWO_HOSTS_PORT}" for _, address in hosts],
                     lambda index, argv: two_hosts.command(hosts[index][0], argv),
                     **_unproxied())
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not {namespace for namespace, _ in hosts} & set(listed.split()), listed
