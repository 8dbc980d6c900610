"""The one way export writes: into a private staging directory, published by rename.

Every artifact is written and verified inside a staging directory beside its
destination (``.writing-<pid>-<host>-<random>``, a name TF Serving and
globbing consumers ignore), then renamed into place: a consumer sees a
complete, verified file or version, or nothing. Files are created with the
umask's permissions like any other file. The staging directory is removed on
every exit; one left by a killed process is removed by the next export into
the same directory, once its process is gone.
"""

import errno
import os
import shutil
import socket
import tempfile

PREFIX = ".writing-"
# The last version TF Serving can address: its ModelSpec holds versions as int64.
LAST_VERSION = 2**63 - 1


class Staging:
    """A staging directory under ``parent``, removed on exit (with anything
    not published from it).

    >>> import tempfile, os
    >>> parent = tempfile.mkdtemp()
    >>> with Staging(parent) as staging:
    ...     with open(staging.path_of("a.txt"), "w") as f:
    ...         _ = f.write("done")
    ...     staging.publish("a.txt", os.path.join(parent, "a.txt"))
    >>> sorted(os.listdir(parent))
    ['a.txt']
    """

    def __init__(self, parent):
        remove_stale(parent)
        self.path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{_host()}-",
                                     dir=os.path.abspath(parent))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        shutil.rmtree(self.path, ignore_errors=True)

    def path_of(self, name):
        """Where to write ``name`` (a relative path) inside the staging directory."""
        path = os.path.join(self.path, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def publish(self, name, final):
        """Renames the staged file ``name`` onto ``final`` (replacing a file there)."""
        os.replace(os.path.join(self.path, name), final)

    def size_of(self, name):
        """The bytes of the staged file ``name``, or of every file under the staged directory."""
        path = os.path.join(self.path, name)
        if os.path.isfile(path):
            return os.path.getsize(path)
        return sum(os.path.getsize(os.path.join(directory, file))
                   for directory, _, files in os.walk(path) for file in files)

    def publish_version(self, name, model_dir, version=None):
        """Renames the staged directory ``name`` to ``model_dir/<version>`` and
        returns that path. An existing version is never replaced: a given
        ``version`` that appeared meanwhile raises FileExistsError; with
        ``version`` None the next free integer is taken, retried if another
        process takes it first."""
        source = os.path.join(self.path, name)
        while True:
            number = version if version is not None else (versions(model_dir) or [0])[-1] + 1
            if number > LAST_VERSION:
                raise OverflowError(f"no version is left after {LAST_VERSION}")
            final = os.path.join(model_dir, str(number))
            try:
                if os.path.lexists(final) and not _empty_dir(final):
                    raise FileExistsError(errno.EEXIST, "exists", final)
                # rename(2) onto a non-empty directory fails: no version is replaced.
                os.rename(source, final)
                return final
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY) or version is not None:
                    raise
                # Another export took this number between our look and our rename.


def versions(model_dir):
    """The versions TF Serving would see under ``model_dir``, ascending:
    directories named by ASCII digits, 1 to ``LAST_VERSION``."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for entry in os.listdir(model_dir):
        if (entry.isascii() and entry.isdigit() and 1 <= int(entry) <= LAST_VERSION
                and os.path.isdir(os.path.join(model_dir, entry))):
            found.append(int(entry))
    return sorted(found)


def remove_stale(*directories):
    """Removes staging directories under ``directories`` whose process, on
    this host, has ended."""
    host = _host()
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            pid, _, rest = entry[len(PREFIX):].partition("-")
            if (entry.startswith(PREFIX) and pid.isdigit() and rest.rsplit("-", 1)[0] == host
                    and not _alive(int(pid))):
                path = os.path.join(directory, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _empty_dir(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def _host():
    return socket.gethostname().replace(os.sep, "_")
