"""Issue 18 item 8: scripts/setup.sh and scripts/test.sh pick the same Python; on a stock
Debian/Ubuntu python3 (externally managed, PEP 668) that is a project virtual environment, and an
active one is respected (scripts/python_env.sh)."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM = Path("/usr/bin/python3")


def _marked(python: Path) -> bool:
    if not python.is_file():
        return False
    code = "import sysconfig; print(sysconfig.get_path('stdlib'))"
    stdlib = subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


needs_pep668 = pytest.mark.skipif(
    not _marked(SYSTEM), reason="needs a /usr/bin/python3 marked EXTERNALLY-MANAGED (Debian)"
)


def _choose(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "SUGAR_ROOT": str(tmp_path)}
    script = f"source {REPO / 'scripts' / 'python_env.sh'}; sugar_python {' '.join(args)}"
    return subprocess.run(
        ["bash", "-c", script], env={**base, **env}, capture_output=True, text=True, timeout=300
    )


@needs_pep668
def test_an_externally_managed_python_gets_the_project_venv(tmp_path: Path) -> None:
    chosen = _choose(tmp_path)
    assert chosen.returncode == 0 and chosen.stdout.strip() == str(tmp_path / ".venv/bin/python")
    assert not (tmp_path / ".venv").exists()  # choosing never writes


def test_an_active_venv_and_python_are_respected(tmp_path: Path) -> None:
    venv = tmp_path / "mine"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    assert _choose(tmp_path, VIRTUAL_ENV=str(venv)).stdout.strip() == str(venv / "bin/python")
    assert _choose(tmp_path, PYTHON="/opt/py").stdout.strip() == "/opt/py"


def test_a_python_that_is_not_externally_managed_is_used_as_is(tmp_path: Path) -> None:
    here = Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
    if here.is_file():
        pytest.skip("this interpreter is externally managed")
    bin_dir = Path(os.popen("command -v python3").read().strip()).parent
    chosen = _choose(tmp_path, PATH=f"{bin_dir}:/usr/bin:/bin")
    assert chosen.stdout.strip() == str(bin_dir / "python3")


@needs_pep668
def test_an_externally_managed_python_named_by_python_gets_the_project_venv(
    tmp_path: Path,
) -> None:
    chosen = _choose(tmp_path, PYTHON=str(SYSTEM))  # pip would refuse to install into it
    assert chosen.returncode == 0 and chosen.stdout.strip() == str(tmp_path / ".venv/bin/python")
    assert not (tmp_path / ".venv").exists()


@needs_pep668
@pytest.mark.slow
def test_setup_creates_a_venv_pip_may_install_into(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"  # where this machine's pip finds torch, say
    chosen = _choose(tmp_path, "create", PIP_FIND_LINKS=str(wheels))
    python = tmp_path / ".venv" / "bin" / "python"
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == str(python) and python.is_file()
    assert "externally managed (PEP 668)" in chosen.stderr
    in_venv = "import sys; assert sys.prefix != sys.base_prefix"  # never externally managed
    assert subprocess.run([python, "-c", in_venv]).returncode == 0
    pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and str(tmp_path / ".venv") in pip.stdout
    # the venv keeps the sources pip saw when it was made, for a later shell without PIP_*
    assert f"find-links = {wheels}" in (tmp_path / ".venv" / "pip.conf").read_text()
    config = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "elsewhere")},
    )  # fmt: skip
    assert f"global.find-links='{wheels}'" in config.stdout, config.stdout
    again = _choose(tmp_path, "create")  # reused, not recreated
    assert again.stdout.strip() == str(python) and "creating" not in again.stderr


def test_sugar_is_linked_onto_the_path_without_clobbering(tmp_path: Path) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "sugar").write_text("#!/bin/sh\necho sugar\n")
    (venv_bin / "sugar").chmod(0o755)
    local = tmp_path / "home" / ".local" / "bin"
    path = f"{local}:/usr/bin:/bin"
    script = (
        f"source {REPO / 'scripts' / 'python_env.sh'}; "
        f"sugar_link_command {venv_bin / 'python'}; sugar"
    )
    env = {"PATH": path, "HOME": str(tmp_path / "home"), "SUGAR_ROOT": str(tmp_path)}
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "sugar" and (local / "sugar").resolve() == venv_bin / "sugar"
    (local / "sugar").unlink()
    (local / "sugar").write_text("#!/bin/sh\necho theirs\n")
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert "left alone" in run.stderr and (local / "sugar").read_text().endswith("theirs\n")


FAKE_PYTHON = """#!/bin/bash
case "$1" in
  -) exit 0 ;;  # the PEP 668 check: externally managed
  -m) mkdir -p "$3/lib" && echo half > "$3/lib/written-by-venv"; exit 1 ;;  # venv fails half-way
  -c) echo 3.11 ;;
esac
"""


def _fake_system(tmp_path: Path) -> str:
    """A PATH whose python3 is externally managed and cannot make a venv, and whose apt-get
    fails (nothing is installed)."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for name, text in (("python3", FAKE_PYTHON), ("apt-get", "#!/bin/sh\nexit 1\n")):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    return f"{fake}:/usr/bin:/bin"


def test_a_venv_folder_sugar_did_not_make_is_never_filled_or_deleted(tmp_path: Path) -> None:
    theirs = tmp_path / ".venv"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    chosen = _choose(tmp_path, "create", PATH=_fake_system(tmp_path))
    assert chosen.returncode != 0 and "exists but has no bin/python" in chosen.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]  # untouched


def test_a_failed_venv_creation_removes_only_what_it_wrote(tmp_path: Path) -> None:
    chosen = _choose(tmp_path, "create", PATH=_fake_system(tmp_path))
    assert chosen.returncode != 0 and "creating the virtual environment" in chosen.stderr
    assert not (tmp_path / ".venv").exists()  # the half-made venv of this call is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fakebin"]
