"""The memory budget "auto" keeps to, like cuDNN's workspace limit: its switch, and what fits it.

A budget is the bytes one training step of a call may hold beyond its
input and output, as each lowering estimates it (``Lowering.memory``).
With none set (the default), "auto" chooses by speed alone.
"""

import logging
import math
import os
import re

ENV_MEMORY_BUDGET = "TF_CONV3DT_MEMORY_BUDGET"
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

_switch = [None]  # set_memory_budget's bytes; None follows the environment variable
_logged = set()  # the calls whose budget excluded every candidate, logged once each
_log = logging.getLogger("tf_conv3dt")


def parse(value, name):
    """``value`` as bytes: a positive int, or a string of a number and an
    optional unit (B, KB, MB, GB, KiB, MiB, GiB; "512MiB", "1.5 GiB"). A
    ValueError names ``name`` and the value for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = (re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", value)
             if isinstance(value, str) else None)
    if match and match.group(2).upper() in UNITS:
        size = float(match.group(1)) * UNITS[match.group(2).upper()]
        if size >= 1 and math.isfinite(size):
            return int(size)
    raise ValueError(f"{name} must be a number of bytes above 0, or one with a unit "
                     f"({', '.join(unit for unit in UNITS if unit)}), such as '512MiB'. "
                     f"Received: {name}={value!r}")


def set_memory_budget(budget):
    """Keeps "auto" to lowerings whose training step is estimated to hold at
    most ``budget`` beyond its input and output (bytes, or a string such as
    "2GiB"; :func:`parse`), for this process; None follows
    ``TF_CONV3DT_MEMORY_BUDGET`` again (unset: no budget)."""
    _switch[0] = None if budget is None else parse(budget, "budget")


def memory_budget():
    """The budget in bytes: :func:`set_memory_budget`'s, else
    ``TF_CONV3DT_MEMORY_BUDGET``'s, else None (none)."""
    if _switch[0] is not None:
        return _switch[0]
    value = os.environ.get(ENV_MEMORY_BUDGET, "")
    return parse(value, ENV_MEMORY_BUDGET) if value.strip() else None


def within(call, lowering, candidates):
    """``(lowering, why)``: ``lowering`` where the budget allows it (or where
    it, or the budget, is unknown), else the candidate of ``candidates``
    that fits it with the smallest estimate, else the smallest of all,
    logged once per call; ``why`` is None where ``lowering`` stays."""
    budget = memory_budget()
    if budget is None or not _over(call, lowering, budget):
        return lowering, None
    estimated = {c: c.memory(call) for c in candidates if c.memory(call) is not None}
    if not estimated:
        return lowering, None
    smallest = min(estimated, key=estimated.get)
    limit = f"the memory budget ({budget} bytes)"
    if estimated[smallest] <= budget:
        return smallest, f"{lowering.name} over {limit}"
    if call not in _logged:
        _logged.add(call)
        _log.warning("No lowering fits %s for the call %s; running the smallest, %s "
                     "(estimated %d bytes).", limit, call, smallest.name, estimated[smallest])
    return smallest, f"every lowering over {limit}: the smallest"


def fitting(call, candidates):
    """Those of ``candidates`` the budget allows for ``call`` (all where
    there is none), or the smallest where it allows none: what tuning times."""
    budget = memory_budget()
    if budget is None:
        return list(candidates)
    allowed = [c for c in candidates if not _over(call, c, budget)]
    return allowed or [within(call, candidates[0], candidates)[0]]


def _over(call, lowering, budget):
    estimate = lowering.memory(call)
    return estimate is not None and estimate > budget
