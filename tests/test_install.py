"""The install: ``import jaxconv`` gives the real package from the folder that holds the checkout.

``git clone <url> jaxconv`` leaves a folder named like the package, without an ``__init__.py``:
from its parent, Python's path search takes that folder as an empty namespace package unless
the install puts the real package on the path itself (a path entry, not a finder asked last).

- ``test_editable_wheel_*`` builds the editable wheel of a copy of this checkout with
  setuptools' PEP 660 hook (as ``pip install -e .`` does), unpacks it into a fresh site folder
  (as an installer does) and imports from the copy's parent in a Python that sees no other
  jaxconv: it checks what ``pyproject.toml`` makes of any editable install.
- ``test_this_environment_*`` checks the install in the running environment (``.ci/setup`` or
  ``pip install -e .``) the same way; it is skipped where jaxconv is not installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run from the parent of a folder named jaxconv; print where jaxconv came from, fail unless it
# is the real package (AttributeError on the empty namespace package).
PROBE = "import jaxconv; print(jaxconv.__file__); print(jaxconv.conv2d.__name__)"


def _env_without_pythonpath() -> dict[str, str]:
    """The environment minus PYTHONPATH: the import must come from the install alone."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env_without_pythonpath(), capture_output=True, text=True, timeout=300
    )


def _holds_jaxconv(entry: str) -> bool:
    """Whether a sys.path entry would import a jaxconv package of its own."""
    return (Path(entry) / "jaxconv" / "__init__.py").exists()


def _copy_checkout(dest: Path) -> Path:
    """Copy what a build reads (pyproject.toml, README.md, the package) to ``dest``."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "jaxconv", dest / "jaxconv", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def _build_editable_wheel(project: Path, wheel_dir: Path) -> Path:
    """Build ``project``'s editable wheel with setuptools' PEP 660 hook, no network."""
    wheel_dir.mkdir()
    code = "import sys, setuptools.build_meta as b; print(b.build_editable(sys.argv[1]))"
    done = _run([sys.executable, "-c", code, str(wheel_dir)], cwd=project)
    assert done.returncode == 0, done.stderr[-3000:]
    return wheel_dir / done.stdout.strip().splitlines()[-1]


def test_editable_wheel_is_not_shadowed_by_a_checkout_named_jaxconv(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject.toml's build-system floor
        pytest.skip(f"needs setuptools >= 77 to build, found {setuptools.__version__}")
    parent = tmp_path / "parent"
    project = _copy_checkout(parent / "jaxconv")
    wheel = _build_editable_wheel(project, tmp_path / "wheel")

    site_dir = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site_dir)
    # -S: no site-packages of this environment and none of their .pth files, so no other
    # jaxconv install; this process's path (less any entry holding a jaxconv package) comes
    # back only for jax and numpy, then the unpacked wheel is added as a site folder, its .pth
    # files processed as an installed wheel's are.
    deps = [p for p in sys.path if p and Path(p).is_dir() and not _holds_jaxconv(p)]
    code = (
        f"import site, sys; sys.path.extend({deps!r}); site.addsitedir({str(site_dir)!r}); " + PROBE
    )
    done = _run([sys.executable, "-S", "-c", code], cwd=parent)
    assert done.returncode == 0, (
        f"import jaxconv from the folder holding the checkout gave no real package "
        f"(wheel holds {zipfile.ZipFile(wheel).namelist()}):\n{done.stderr[-3000:]}"
    )
    file, name = done.stdout.split()[-2:]
    assert Path(file) == project / "jaxconv" / "__init__.py"
    assert name == "conv2d"


def test_this_environment_imports_jaxconv_beside_a_folder_named_jaxconv(tmp_path):
    try:
        importlib.metadata.distribution("jaxconv")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jaxconv is not installed in this environment (only on PYTHONPATH)")
    (tmp_path / "jaxconv").symlink_to(REPO, target_is_directory=True)
    done = _run([sys.executable, "-c", PROBE], cwd=tmp_path)
    assert done.returncode == 0, (
        "import jaxconv beside a folder named jaxconv gave no real package: this environment's "
        "install predates the fix in pyproject.toml; reinstall it (bash .ci/setup, or "
        f"pip install -e .):\n{done.stderr[-3000:]}"
    )
    assert done.stdout.split()[-1] == "conv2d"
