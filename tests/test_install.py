"""Install -> run a kernel -> uninstall -> editable install (issue 17 item 3).

The README's sequence once left Numba's compiled cache in site-packages/fastmle: pip
could not remove it, and the leftover directory shadowed a later editable install as
an empty namespace package. The compiled cache now lives in a per-user directory.

A throw-away venv (no pip of its own: this interpreter's pip drives it with
``--python``) sees the test environment's packages (all but fastmle) through a ``.pth`` line, so
nothing is downloaded (``--no-deps --no-build-isolation``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not (ROOT / "pyproject.toml").exists(),
    reason="needs the source tree and a POSIX venv layout",
)

RUN = textwrap.dedent("""
    import json, numpy as np, fastmle as fm
    from fastmle._cpu import cross_entropy as ce
    loss = float(fm.cross_entropy(np.ones((4, 100), np.float32), np.array([0, 1, 2, 0])))
    print(json.dumps({"file": fm.__file__, "loss": loss,
                      "cache": ce._ce_index_kernel._cache.cache_path}))
""")


def _source_copy(dst: Path) -> Path:
    """The files a build needs, so that pip writes no build/ or egg-info into ROOT."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(
        ROOT / "fastmle",
        dst / "fastmle",
        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"),
    )
    return dst


def _venv(path: Path) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    py = path / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(
        subprocess.run(
            [str(py), "-c", where], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    # This environment's packages (numba, numpy, ...), but not its fastmle: CI installs
    # fastmle into site-packages, where a path entry would shadow the editable install
    # (setuptools' editable finder comes after the path finder). A folder of links to
    # everything else, with no .pth files processed.
    deps = path / "test-env-deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if (
            not entry.name.lower().startswith(("fastmle", "__editable__"))
            and entry.suffix != ".pth"
        ):
            (deps / entry.name).symlink_to(entry)
    (site / "zz_test_env.pth").write_text(f"{deps}\n")
    return py, site


def _pip(py: Path, *args: str, env) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            *args,
            "--disable-pip-version-check",
            "--no-input",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_install_run_uninstall_then_editable_install(tmp_path):
    src = _source_copy(tmp_path / "src")
    py, site = _venv(tmp_path / "venv")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE", "PYTHON", "PIP_"))
    }
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["HOME"] = str(tmp_path / "home")
    env["PIP_NO_INDEX"] = "1"
    work = tmp_path / "elsewhere"  # not the source tree: imports come from the install
    work.mkdir()

    _pip(py, "install", "--no-deps", "--no-build-isolation", str(src), env=env)
    pkg = site / "fastmle"
    assert (pkg / "__init__.py").exists()
    proc = subprocess.run(
        [str(py), "-c", RUN], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).parent == pkg
    assert Path(res["cache"]).is_relative_to(tmp_path / "cache" / "fastmle")
    assert any(Path(res["cache"]).glob("*.nbi"))
    assert not [p for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc")]

    _pip(py, "uninstall", "-y", "fastmle", env=env)
    assert not pkg.exists(), sorted(str(p) for p in pkg.rglob("*"))

    _pip(py, "install", "--no-deps", "--no-build-isolation", "-e", str(src), env=env)
    proc = subprocess.run(
        [str(py), "-c", RUN], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["file"]) == src / "fastmle" / "__init__.py"
    assert res["loss"] > 0
    cli = subprocess.run(
        [str(py.parent / "fastmle"), "--version"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "0." in cli.stdout + cli.stderr
