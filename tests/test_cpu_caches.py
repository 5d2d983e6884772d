"""oneDNN's primitive cache is capped on import unless the user set its size."""
import os
import subprocess
import sys

import pytest

from r1train.cpu_caches import ONEDNN_PRIMITIVE_CACHE_CAPACITY


def capacity_seen_after_import(env: dict[str, str]) -> str:
    code = "import r1train, os; print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY', '-'))"
    clean = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize(("env", "seen"), [
    ({}, str(ONEDNN_PRIMITIVE_CACHE_CAPACITY)),
    ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}, "1024"),
    ({"DNNL_PRIMITIVE_CACHE_CAPACITY": "512"}, "-"),  # the older name, which oneDNN also reads
])
def test_the_capacity_is_set_unless_the_user_set_one(env, seen):
    assert capacity_seen_after_import(env) == seen
