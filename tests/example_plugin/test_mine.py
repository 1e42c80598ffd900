"""The plugin's own tests: the conformance kit of runners, against the installed back-end."""

import runners.testing


class TestMine(runners.testing.BackendSuite):
    backend = "mine"
