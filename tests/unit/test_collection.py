"""Every folder of tests is run by one of the two commands: ``make test`` (pytest's
``testpaths`` in pyproject.toml) or ``make e2e`` (the folder the Makefile's e2e
target hands pytest). A folder that holds ``test_*.py`` files and neither names is
a folder of tests that never run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def collected_roots(root: Path) -> list[Path]:
    """The folders that ``make test`` and ``make e2e`` collect."""
    doc = tomllib.loads((root / "pyproject.toml").read_text())
    roots = [root / p for p in doc["tool"]["pytest"]["ini_options"]["testpaths"]]
    makefile = (root / "Makefile").read_text()
    e2e = re.search(r"^e2e:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert e2e is not None, "the Makefile has no e2e target"
    roots += [root / p for p in re.findall(r"-m pytest (tests/\S+)", e2e.group(1))]
    return roots


def uncollected(root: Path) -> list[str]:
    """The folders under ``tests/`` holding test modules that neither command collects."""
    roots = collected_roots(root)
    folders = {p.parent for p in (root / "tests").rglob("test_*.py")}
    return sorted(
        str(f.relative_to(root))
        for f in folders
        if not any(f == r or r in f.parents for r in roots)
    )


def test_every_folder_of_tests_is_collected() -> None:
    assert uncollected(ROOT) == []


def test_the_commands_collect_the_four_folders() -> None:
    names = {str(p.relative_to(ROOT)) for p in collected_roots(ROOT)}
    assert names == {"tests/unit", "tests/integration", "tests/process", "tests/e2e"}


def test_a_folder_nothing_collects_is_found(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "Makefile"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    for folder in ("unit", "scratch", "unit/deeper", "e2e"):
        (tmp_path / "tests" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tests" / folder / "test_x.py").write_text("def test_x(): pass\n")
    (tmp_path / "tests" / "helpers").mkdir()
    (tmp_path / "tests" / "helpers" / "fakes.py").write_text("")  # no tests: not a finding
    assert uncollected(tmp_path) == ["tests/scratch"]
