"""scripts/setup.sh on a nearly full disk: one line and no half-made environment."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_of_the_setup(tmp_path: Path, free_kib: int) -> tuple[Path, dict[str, str]]:
    """The script and pyproject.toml in a scratch folder, with a `df` reporting `free_kib` free
    (the only way to give a test a full disk) and a `bwrap` present so nothing is installed."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "df").write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/vda 263174212 263000000 {free_kib} 99% /'\n"
    )
    (bin_dir / "bwrap").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return tmp_path, {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_setup_on_a_nearly_full_disk_stops_in_one_line_before_making_the_environment(tmp_path):
    folder, env = copy_of_the_setup(tmp_path, free_kib=2 * 1024 * 1024)

    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about 6 GiB free" in lines[0] and "2 GiB is free" in lines[0], result.stderr
    assert not (folder / ".venv").exists()


def test_an_environment_already_installed_needs_no_free_space(tmp_path):
    folder, env = copy_of_the_setup(tmp_path, free_kib=0)
    stamp = folder / ".venv" / ".r1train-installed"
    stamp.parent.mkdir()
    installed = (folder / "pyproject.toml").read_bytes() + (folder / "scripts" / "setup.sh").read_bytes()
    stamp.write_text(hashlib.sha256(installed).hexdigest()[:16] + "\n")

    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
