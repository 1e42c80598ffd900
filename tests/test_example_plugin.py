"""The README's back-end plugin is tests/example_plugin, a real distribution: installed from a temporary
copy (pip --target, no network) and run through the conformance kit by its own test file, in a pytest
of its own that sees the plugin only through its entry point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

EXAMPLE = ROOT / "tests" / "example_plugin"


def test_the_readme_shows_the_example_plugin_as_it_is():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Writing a back-end plugin", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    assert ("python", (EXAMPLE / "runners_mine.py").read_text()) in shown
    assert ("toml", (EXAMPLE / "pyproject.toml").read_text()) in shown


def test_the_example_plugin_installs_and_passes_the_kit(tmp_path):
    source = shutil.copytree(EXAMPLE, tmp_path / "src")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, timeout=120)
    assert (site / "runners_mine.py").exists() and not (site / "runners").exists()  # the plugin alone
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(source / "test_mine.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # Every case of the kit ran and passed (it skips none for this plugin): as many as it has.
    collect = [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
               str(source / "test_mine.py")]
    kit_cases = subprocess.run(collect, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120).stdout
    collected = re.search(r"(\d+) tests? collected", kit_cases)
    assert collected and int(collected.group(1)) >= 20, kit_cases[-2000:]
    assert re.search(rf"\b{collected.group(1)} passed\b", done.stdout), done.stdout[-2000:]
