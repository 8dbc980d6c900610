"""The export's faults: killed, interrupted, terminated, out of space or read-only, concurrent."""

import contextlib
import errno
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tf_conv3dt import export
from tf_conv3dt.export import staging
from exports import CLI, run_cli, tree_digest
from markers import cli_only


def _files_under(path):
    return [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]


def _signal_when(argv, signum, pattern=None, line=None, attempts=3):
    """Runs the CLI and sends ``signum`` once ``pattern`` globs a path, or
    once it has printed a progress line containing ``line``; retried if the
    export outran the poll. Returns the finished process."""
    for _ in range(attempts):
        process = subprocess.Popen([sys.executable, CLI, *([] if line else ["--quiet"]), *argv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        printed = []
        reader = threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if glob.glob(pattern) if pattern else any(line in p for p in list(printed)):
                process.send_signal(signum)
                break
            time.sleep(0.002)
        process.err = process.communicate()[1]
        reader.join()
        process.out = "".join(printed)
        if process.returncode in (-signal.SIGKILL, 128 + signum):
            break
    return process


@cli_only
def test_killed_then_interrupted_exports_publish_nothing_and_leave_nothing(exported, tmp_path):
    """SIGKILL while the SavedModel is written: TF Serving finds no new
    version, the earlier one is intact. The next export removes the dead
    one's staging directory; Ctrl-C during its TFLite conversion ends it
    with status 130, nothing published and nothing left behind."""
    _, out, _ = exported
    base = tmp_path / "serving" / "conv3dt"
    shutil.copytree(os.path.join(out, "serving", "conv3dt", "1"), base / "1")
    before = tree_digest(base / "1")

    killed = _signal_when(["--out", str(tmp_path), "--formats", "savedmodel"], signal.SIGKILL,
                          pattern=str(tmp_path / ".writing-*" / "saved_model" / "*"))
    assert killed.returncode == -signal.SIGKILL
    assert sorted(e for e in os.listdir(base) if e.isdigit()) == ["1"]
    assert tree_digest(base / "1") == before
    assert glob.glob(str(tmp_path / f".writing-{killed.pid}-*"))  # what the next one cleans

    interrupted = _signal_when(["--out", str(tmp_path), "--formats", "keras,tflite"],
                               signal.SIGINT, pattern=str(tmp_path / ".writing-*" / "tflite" / "*"))
    assert interrupted.returncode == 130, interrupted.err
    assert interrupted.err.strip().splitlines()[-1] == (
        "error: interrupted; nothing was published")
    assert sorted(os.listdir(tmp_path)) == ["serving", "tflite"]
    assert os.listdir(tmp_path / "tflite") == [] and os.listdir(base) == ["1"]


@cli_only
def test_terminated_and_hung_up_exports_publish_nothing_then_the_next_one_does(exported,
                                                                              tmp_path):
    """SIGTERM (how Kubernetes, systemd and batch schedulers stop a job) and
    SIGHUP at three stages end the export as Ctrl-C does: the conventional
    status, one line saying so, nothing published and no staging left. The
    next export then publishes the version none of them did."""
    model, _, _ = exported
    for signum, formats, stage in [
            (signal.SIGTERM, "savedmodel", "writing TF Serving SavedModel"),
            (signal.SIGHUP, "tflite", "converting TFLite float16"),
            (signal.SIGTERM, "savedmodel", "running it in a fresh process")]:
        stopped = _signal_when(["--out", str(tmp_path), "--formats", formats], signum,
                               line=stage)
        where = f"{signal.Signals(signum).name} after {stage!r}: {stopped.err[-2000:]}"
        assert stopped.returncode == 128 + signum, where
        assert stage in stopped.out.splitlines()[-1], where  # it stopped at that stage
        word = "terminated" if signum == signal.SIGTERM else "hung up"
        assert stopped.err.strip().splitlines()[-1] == f"error: {word}; nothing was published"
        # Only the (empty) directories artifacts go in are left.
        assert not _files_under(tmp_path), where
        assert not glob.glob(str(tmp_path / "**" / ".writing-*"), recursive=True), where
    with pytest.warns(UserWarning, match="synthetic"):
        report = export.export_model(model, str(tmp_path), formats="savedmodel")
    assert report["published"] and os.listdir(tmp_path / "serving" / "conv3dt") == ["1"]


@cli_only
def test_a_signal_while_publishing_waits_for_every_rename(tmp_path, capsys, monkeypatch):
    """A SIGTERM that arrives once the renames have begun lets them all
    finish, then ends the export with status 143, saying so: never half a
    set of artifacts under their final names."""
    real_publish = staging.Staging.publish

    def publish_after_a_sigterm(self, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_publish(self, *args)

    monkeypatch.setattr(staging.Staging, "publish", publish_after_a_sigterm)
    code, _, err = run_cli(capsys, "--quiet", "--out", str(tmp_path), "--formats", "keras")
    assert code == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated; everything was published first"
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "report.json"]


@contextlib.contextmanager
def _tmpfs(path, size):
    """A tmpfs of ``size`` mounted at ``path`` for the block; skips the test,
    with mount's reason, where this process cannot mount one."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
def test_a_full_disk_at_any_stage_names_out_and_the_reason(exported, tmp_path, capsys):
    """Exports onto a small tmpfs, of sizes that run out (here) in the
    model.keras write, the SavedModel's variables, its warmup records, the
    fresh-process check's input and a TFLite conversion's intermediate
    SavedModel: each ends with the OS reason and ``out_dir``, nothing
    published and no staging left; the CLI says it in one line, exit 2."""
    model, _, _ = exported
    for i, (formats, size) in enumerate([("keras", "100k"), ("savedmodel", "100k"),
                                         ("savedmodel", "1200k"), ("savedmodel", "2800k"),
                                         ("tflite", "300k")]):
        with _tmpfs(tmp_path / f"disk{i}", size) as disk:
            with pytest.raises(export.ExportError) as raised, \
                    pytest.warns(UserWarning, match="synthetic"):
                export.export_model(model, str(disk), formats=formats)
            assert (raised.value.argument, raised.value.value) == ("out_dir", str(disk))
            assert raised.value.problem == ("cannot be written: No space left on device; "
                                            "nothing was published"), (formats, size)
            assert not _files_under(disk), (formats, size)
            assert not glob.glob(str(disk / "**" / ".writing-*"), recursive=True)
            if i == 0:
                code, _, err = run_cli(capsys, "--quiet", "--out", str(disk), "--formats", formats)
                assert code == 2 and err == (f"error: --out {str(disk)!r}: cannot be written: "
                                             "No space left on device; nothing was published\n")


@pytest.mark.parametrize("code, formats, name", [
    (errno.ENOSPC, "keras", "model.keras"), (errno.EDQUOT, "savedmodel", "saved_model"),
    (errno.EIO, "tflite", "tflite/model_float32.tflite"),
    (errno.EROFS, "tflite", "tflite/model_int8.tflite")],
    ids=["ENOSPC-keras", "EDQUOT-savedmodel", "EIO-tflite", "EROFS-tflite-int8"])
def test_a_failed_write_at_any_stage_names_out_and_the_reason(exported, tmp_path, monkeypatch,
                                                              code, formats, name):
    """An OS write error injected at a stage's write ends the export with an
    ExportError naming ``out_dir`` and the OS reason: nothing published, no
    staging left."""
    model, _, _ = exported
    real_path_of = staging.Staging.path_of

    def failing_path_of(self, staged_name):
        if staged_name == name:
            raise OSError(code, os.strerror(code), os.path.join(self.path, staged_name))
        return real_path_of(self, staged_name)

    monkeypatch.setattr(staging.Staging, "path_of", failing_path_of)
    with pytest.raises(export.ExportError) as raised, pytest.warns(UserWarning, match="synthetic"):
        export.export_model(model, str(tmp_path), formats=formats)
    assert raised.value.argument == "out_dir" and raised.value.value == str(tmp_path)
    assert raised.value.problem == (f"cannot be written: {os.strerror(code)}; "
                                    "nothing was published")
    assert not _files_under(tmp_path) and not glob.glob(str(tmp_path / "**" / ".writing-*"),
                                                        recursive=True)


def test_stale_staging_of_a_dead_process_is_removed_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = socket.gethostname()
    names = {f".writing-{dead.stdout.strip()}-{host}-abc": False,   # dead here: removed
             f".writing-{os.getpid()}-{host}-abc": True,            # alive: kept
             f".writing-{dead.stdout.strip()}-elsewhere-abc": True,  # another host's: kept
             ".writing-abc": True, "1": True}
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    staging.remove_stale(str(tmp_path))
    assert {name: (tmp_path / name).exists() for name in names} == names


def test_concurrent_exports_each_get_their_own_version(tmp_path, monkeypatch):
    """Two exports see the same latest version; the one that renames second
    takes the next number instead of failing or replacing the first's."""
    model_dir = str(tmp_path / "serving" / "m")
    os.makedirs(os.path.join(model_dir, "4"))
    open(os.path.join(model_dir, "4", "saved_model.pb"), "w").close()
    first, second = staging.Staging(model_dir), staging.Staging(model_dir)
    for staged in (first, second):
        os.makedirs(staged.path_of(os.path.join("version", "variables")))
    looks = iter([[4], [4], [4, 5]])  # both look before either renames
    monkeypatch.setattr(staging, "versions", lambda _: next(looks))
    with first, second:
        assert first.publish_version("version", model_dir) == os.path.join(model_dir, "5")
        assert second.publish_version("version", model_dir) == os.path.join(model_dir, "6")
        with staging.Staging(model_dir) as third, pytest.raises(FileExistsError):
            os.makedirs(third.path_of("version"))
            third.publish_version("version", model_dir, version=5)
    assert sorted(os.listdir(model_dir)) == ["4", "5", "6"]


def test_versions_are_directories_named_by_ascii_digits_within_int64(tmp_path):
    for name in ["1", "7", "0", "\u0663", "12a", str(2**63), ".writing-1-h-x"]:
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file")
    assert staging.versions(str(tmp_path)) == [1, 7]
