"""Two network namespaces joined by one veth pair: two hosts for the multi-worker tests.

Each namespace holds one end of the pair, addressed from 198.18.0.0/15, the
range reserved for network benchmarking (RFC 2544), and its own loopback. It
has no default route and no other interface, so a process run in it (``ip
netns exec``) reaches the other namespace through the link and nothing else:
not the machine's own addresses, and nothing outside the two namespaces.
Needs ``ip`` and the right to make namespaces (root, or CAP_SYS_ADMIN and
CAP_NET_ADMIN); :func:`unavailable` says why not, where not.
"""

import contextlib
import os
import shutil
import subprocess

ADDRESSES = ("198.18.0.1", "198.18.0.2")
PREFIX = 30  # a /30 holds exactly the two ends


def _ip(*arguments):
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(arguments)}: {done.stderr.strip() or done.returncode}")


def unavailable():
    """Why two namespaces cannot be made here, or None where they can."""
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = f"tf-conv3dt-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except OSError as error:
        return f"cannot make a network namespace: {error}"
    _ip("netns", "delete", probe)
    return None


@contextlib.contextmanager
def two_hosts():
    """Yields ``[(namespace, address), (namespace, address)]``; removes both
    namespaces (and with them the veth pair) on the way out, whatever happened."""
    tag = f"tfc3-{os.getpid()}"
    namespaces = [f"{tag}-{i}" for i in range(2)]
    links = [f"v{os.getpid()}{side}" for side in "ab"]  # at most 15 characters
    made = []
    try:
        for namespace in namespaces:
            _ip("netns", "add", namespace)
            made.append(namespace)
        _ip("link", "add", links[0], "netns", namespaces[0], "type", "veth",
            "peer", "name", links[1], "netns", namespaces[1])
        for namespace, link, address in zip(namespaces, links, ADDRESSES):
            _ip("-n", namespace, "address", "add", f"{address}/{PREFIX}", "dev", link)
            _ip("-n", namespace, "link", "set", link, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield list(zip(namespaces, ADDRESSES))
    finally:
        for namespace in made:
            _ip("netns", "delete", namespace)


def set_link(namespace, state):
    """Sets ``namespace``'s end of the link "down" (the other host then hears
    nothing more from it: no reset, no close, as when a host loses power or
    its network) or "up" again."""
    listed = subprocess.run(["ip", "-n", namespace, "-o", "link", "show", "type", "veth"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    for line in listed.splitlines():
        _ip("-n", namespace, "link", "set", line.split(":")[1].strip().split("@")[0], state)


def command(namespace, argv):
    """``argv`` run inside ``namespace``."""
    return ["ip", "netns", "exec", namespace, *argv]
