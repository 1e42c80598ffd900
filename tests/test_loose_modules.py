"""`loose_modules`: the driver's own code that a distributed back-end ships to other hosts, found among
what this process imported, against real files: a task file and what it imports are found, anything
installed is not."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import uuid
from pathlib import Path

import pytest
import yaml

import runners
from runners.backend import installed_folders, loose_modules


@pytest.fixture
def names(monkeypatch):
    """Unique module names for this test, forgotten by sys.modules afterwards."""
    tag = uuid.uuid4().hex[:8]
    made = [f"{stem}_{tag}" for stem in ("task", "helper", "pkg", "elsewhere")]
    yield made
    for name in made:
        sys.modules.pop(name, None)


def test_a_task_file_the_file_it_imports_and_a_package_beside_it_are_found_imports_first(tmp_path, names,
                                                                                        monkeypatch):
    task, helper, package, _ = names
    (tmp_path / f"{helper}.py").write_text("TWO = 2\n")
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("THREE = 3\n")
    (tmp_path / f"{task}.py").write_text(f"import {helper}\nimport {package}\n"
                                         f"def f(x):\n    return x * {helper}.TWO * {package}.THREE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.import_module(task).f(1) == 6
    found = loose_modules()
    ours = [path for path in found if path.parent == tmp_path.resolve()]
    assert set(ours) == {tmp_path.resolve() / f"{helper}.py", tmp_path.resolve() / package,
                         tmp_path.resolve() / f"{task}.py"}
    # what a module imports comes before it (Dask's upload imports each file as it arrives)
    assert found.index(tmp_path.resolve() / f"{task}.py") > found.index(tmp_path.resolve() / f"{helper}.py")
    assert found.index(tmp_path.resolve() / f"{task}.py") > found.index(tmp_path.resolve() / package)


def test_a_file_loaded_from_a_folder_on_no_sys_path_is_found(tmp_path, names):
    elsewhere = names[3]
    path = tmp_path / f"{elsewhere}.py"
    path.write_text("def square(x):\n    return x * x\n")
    spec = importlib.util.spec_from_file_location(elsewhere, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[elsewhere] = module
    spec.loader.exec_module(module)
    assert str(tmp_path) not in sys.path
    assert path.resolve() in loose_modules()


def test_installed_modules_and_the_script_are_not_found():
    found = loose_modules()
    # site-packages (yaml), the standard library (json), an editable install through a .pth file (runners)
    for module in (yaml, json, runners, importlib.import_module("runners_serial")):
        source = Path(module.__file__).resolve()
        assert source not in found and source.parent not in found, source
        assert any(source.is_relative_to(folder) for folder in installed_folders()), source
    main = getattr(sys.modules["__main__"], "__file__", None)
    assert main is None or Path(main).resolve() not in found


def test_a_module_a_distribution_declares_is_not_found_wherever_its_file_is(tmp_path, names, monkeypatch):
    # As setuptools' editable installs leave it: the file stays in the project, no .pth folder shows it,
    # and the distribution's top_level.txt names it.
    task = names[0]
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / f"{task}.py").write_text("X = 1\n")
    info = tmp_path / "site" / f"{task}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {task}\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "project"))
    importlib.import_module(task)
    assert tmp_path.resolve() / "project" / f"{task}.py" in loose_modules()
    (info / "top_level.txt").write_text(f"{task}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # where importlib.metadata finds distributions
    assert tmp_path.resolve() / "project" / f"{task}.py" not in loose_modules()
