"""Fixtures of the three-host test bed: the bed (one per session) and the time each case took, printed
at the end of the session. What runs on the bed is in `runs.py`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bed.hosts import Bed, BedUnavailable, bed_leftovers

TIMINGS = pytest.StashKey[list[tuple[str, float, str]]]()


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    try:
        the_bed = Bed()
    except BedUnavailable as exc:
        pytest.skip(f"no three-host test bed on this machine: {exc}")
    with the_bed:
        yield the_bed
    left = bed_leftovers(the_bed.prefix)
    assert not left, f"the test bed left {left}"


@pytest.fixture(scope="session")
def timings(request: pytest.FixtureRequest) -> list[tuple[str, float, str]]:
    """(case, seconds, what they measure): printed in the session's summary."""
    return request.config.stash.setdefault(TIMINGS, [])


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    found = config.stash.get(TIMINGS, [])
    if found:
        terminalreporter.section("three-host test bed: time of each case")
        for case, seconds, what in found:
            terminalreporter.write_line(f"{seconds:7.1f} s  {case} ({what})")
