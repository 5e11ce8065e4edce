"""The distribution installs one top-level package, `jetgrid`, and ships its data files.

The architecture folders (events/, coordinator/, projections/, worker/, gateway/) sit at the
repository root and are linked into jetgrid/; a wheel built from the repository must hold them as
jetgrid.<folder> and nothing else at the top level, or installing jetgrid would overwrite other
distributions' modules of the same names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = ("events", "coordinator", "projections", "worker", "gateway")


def _build_wheel(into: Path) -> Path:
    """Build the wheel into `into`; setuptools works in the source tree's build/, which is left
    as it was found."""
    build = REPO / "build"
    had_build = build.exists()
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--wheel-dir", str(into), str(REPO)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    finally:
        if not had_build:
            shutil.rmtree(build, ignore_errors=True)
    [wheel] = into.glob("jetgrid-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"jetgrid"}
    for folder in ARCHITECTURE:
        assert f"jetgrid/{folder}/__init__.py" in names
    assert "jetgrid/py.typed" in names
    assert "jetgrid/gateway/static/index.html" in names


def test_each_architecture_folder_is_linked_into_the_package() -> None:
    for folder in ARCHITECTURE:
        link = REPO / "jetgrid" / folder
        assert link.is_symlink() and link.resolve() == REPO / folder, link
