"""auto's CPU rule is what the kept benchmark runs say it should be."""

import glob
import importlib.util
import os

from tf_conv3dt import ops

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def _derive_module():
    spec = importlib.util.spec_from_file_location(
        "derive_auto_rule", os.path.join(BENCHMARKS, "derive_auto_rule.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rule_table_is_derived_from_the_kept_benchmark_runs():
    derive = _derive_module()
    runs = derive.load_runs(sorted(glob.glob(os.path.join(BENCHMARKS, "results", "*.json"))))
    assert {run["cpu_configuration"] for run in runs} == {"eigen", "onednn"}
    assert derive.derive(runs) == ops.AUTO_RULE
