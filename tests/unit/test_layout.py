"""The package layout's promises: import contracts hold, and every room is where the README says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOMS = (
    "domain", "engine", "intake", "runbooks", "agent", "actions", "notify", "config", "web",
    "cli", "runtime",
)


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    r = subprocess.run(
        [exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout
    assert r.stdout.count("KEPT") >= 6


def test_each_room_is_a_package_named_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for room in ROOMS:
        assert (REPO / "daemon" / room / "__init__.py").is_file(), room
        assert f"daemon/{room}/" in readme, f"README's architecture tree lacks daemon/{room}/"
    flat = sorted(p.name for p in (REPO / "daemon").glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules outside any room: {flat}"


def test_test_modules_have_unique_names() -> None:
    # The test folders are not packages (rootdir import mode): two modules with one basename
    # in different folders stop collection of the whole suite.
    seen: dict[str, Path] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        other = seen.setdefault(path.name, path)
        assert other == path, f"{path.relative_to(REPO)} and {other.relative_to(REPO)} share a name"
