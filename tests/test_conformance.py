"""The conformance kit (runners.testing.BackendSuite) against every installed back-end: a back-end is
real when it passes all of it. The example plugin of the README runs it too (tests/test_example_plugin.py)."""

from __future__ import annotations

import pytest

from runners.testing import BackendSuite
from tests.conftest import installed_backends


class AutoSuite(BackendSuite):
    def returns_any_result_in_the_driver(self, started):
        return True  # auto runs these few quick items in the driver: it hands over only when it pays


def _suite(name: str) -> type[BackendSuite]:
    base = AutoSuite if name == "auto" else BackendSuite
    marks = [pytest.mark.slow] if name in ("ray", "dask", "mpi") else []  # a cluster each: seconds to start
    suite = type(f"Test_{name}", (base,), {"backend": name, "pytestmark": marks})
    suite.__module__ = __name__
    return suite


for _name in installed_backends():
    globals()[f"Test_{_name}"] = _suite(_name)
