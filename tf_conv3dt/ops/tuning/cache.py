"""Tuning's cache: the choices in memory, and in a locked JSON file per machine environment."""

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading

import tensorflow as tf

from tf_conv3dt.ops import cpu

try:
    import fcntl
except ImportError:  # Windows: writes stay atomic, concurrent merges may lose an entry
    fcntl = None

ENV_CACHE_DIR = "TF_CONV3DT_CACHE_DIR"
FORMAT = 7

_logger = logging.getLogger("tf_conv3dt")


def environment():
    """What a timing depends on besides the call: TensorFlow's and this
    package's versions, the device and the CPU configuration."""
    from importlib import metadata

    try:
        version = metadata.version("tf_conv3dt")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"tensorflow": tf.__version__, "tf_conv3dt": version, "device": _device(),
            "cpu_configuration": cpu.cpu_configuration(), "isa": cpu.cpu_isa(),
            "cores": os.cpu_count()}


def _device():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU {details.get('device_name', 'unknown')} " \
               f"{details.get('compute_capability', '')}".strip()
    return f"CPU {cpu.cpu_model()}"


class Cache:
    """Decisions by key (``Call.tuning_key``): in memory for this process, and
    in a JSON file per environment (:attr:`path`), so that a file written
    under another TensorFlow, tf_conv3dt, device or oneDNN setting has
    another name and an environment record that must match, and is never
    reused.

    Args:
      directory: where the file lives; None reads ``TF_CONV3DT_CACHE_DIR``
        at each use, else the user's cache directory (``$XDG_CACHE_HOME`` or
        ``~/.cache``)/tf_conv3dt.
    """

    def __init__(self, directory=None):
        self.directory = directory
        self.memory = {}
        self.lock = threading.RLock()

    @property
    def path(self):
        """This environment's cache file."""
        directory = self.directory or os.environ.get(ENV_CACHE_DIR) or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".cache"), "tf_conv3dt")
        digest = hashlib.sha256(json.dumps(environment(), sort_keys=True).encode()).hexdigest()
        return os.path.join(directory, f"auto-{digest[:16]}.json")

    def remembered(self, key):
        """The decision this process made or read for ``key``, as from "memory", or None."""
        decision = self.memory.get(key)
        return None if decision is None else decision._replace(source="memory")

    def stored(self, key):
        """The file's decision for ``key`` (source "cache"), or None."""
        return self._load(self.path).get(key)

    def remember(self, decision):
        """Keeps ``decision`` in memory for the rest of the process."""
        self.memory[decision.key] = decision

    def forget(self):
        """Empties the in-memory choices (the file stays), as a new process starts."""
        with self.lock:
            self.memory.clear()

    def store(self, decision):
        """Adds ``decision`` to the file: merged under an exclusive lock with
        what other processes wrote, written to a temporary file and renamed
        over the old one, so a reader sees the old file or the new one, never
        a part."""
        path = self.path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with _file_lock(path + ".lock"):
                choices = {json.dumps(key): _entry(d)
                           for key, d in {**self._load(path), decision.key: decision}.items()}
                fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".auto-",
                                                 suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump({"format": FORMAT, "environment": environment(),
                                   "choices": choices}, f, indent=1, sort_keys=True)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(temporary, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary)
                    raise
        except OSError as error:
            _logger.warning("tf_conv3dt auto: could not write the tuning cache %s (%s); the "
                            "choice is kept for this process only", path,
                            error.strerror or error)

    @staticmethod
    def _load(path):
        """The file's decisions by key, or {} where it is missing, unreadable,
        corrupt or written for another environment (logged)."""
        from tf_conv3dt.ops import lowerings
        from tf_conv3dt.ops.tuning.decision import Decision, fastest_first

        try:
            with open(path) as f:
                content = json.load(f)
            if content.get("format") != FORMAT:
                _logger.warning("tf_conv3dt auto: %s has format %r, not %d; not used", path,
                                content.get("format"), FORMAT)
                return {}
            if content.get("environment") != environment():
                _logger.warning("tf_conv3dt auto: %s is for another environment; not used",
                                path)
                return {}
            decisions = {}
            for text, entry in content["choices"].items():
                for role in ("forward", "gradient"):
                    if entry[role] not in lowerings.names(auto=True):
                        raise ValueError(f"a choice names no lowering: {entry[role]!r}")
                key = _key(json.loads(text))
                times = {name: tuple(map(float, ms)) for name, ms in entry["ms"].items()}
                decisions[key] = Decision(key, entry["forward"], entry["gradient"],
                                          fastest_first(times), int(entry["batch"]),
                                          tuple(map(int, entry["spatial"])),
                                          float(entry["seconds"]), "cache",
                                          {name: None if peak is None else float(peak)
                                           for name, peak in entry.get("peaks", {}).items()})
            return decisions
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            _logger.warning("tf_conv3dt auto: ignoring the tuning cache %s (%s: %s)", path,
                            type(error).__name__, error)
            return {}


def _key(value):
    """A key read back from JSON: its lists as tuples, as ``Call.tuning_key`` has them."""
    return tuple(_key(item) if isinstance(item, list) else item for item in value)


def _entry(decision):
    """A decision as the file keeps it: all but its key and source."""
    entry = decision._asdict()
    del entry["key"], entry["source"]
    return entry


@contextlib.contextmanager
def _file_lock(path):
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
