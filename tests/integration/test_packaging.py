"""Packaging: what `pip install .` puts into site-packages, and kvswarm without its extras.

The install test builds the wheel offline: a fresh venv sees this interpreter's
site-packages through a .pth file (so setuptools and the dependencies are reused, nothing
is downloaded) and the project is installed into it with `--no-deps --no-build-isolation`
from a copy of the sources, so no build output lands in the working tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from kvswarm.records import CSV_COLUMNS, RequestRecord, to_row

ROOT = Path(__file__).resolve().parents[2]
# Where each import package's folder is in the repository (pyproject's package-dir).
PACKAGE_ROOTS = {"kvswarm": ROOT / "lib" / "kvswarm", "kvswarm.analysis": ROOT / "analysis"}


def _declared_packages() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return set(tomllib.load(handle)["tool"]["setuptools"]["packages"])


def _package_folders() -> set[str]:
    """Every folder with an __init__.py under lib/kvswarm and analysis/, as import names."""
    found = set()
    for name, folder in PACKAGE_ROOTS.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_package_folder_is_in_pyprojects_packages_list() -> None:
    missing = _package_folders() - _declared_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def _copy_sources(destination: Path) -> Path:
    source = destination / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("lib", "analysis"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    return source


def _venv_seeing_this_one(where: Path) -> tuple[Path, Path]:
    """A fresh venv (python, site-packages) whose sys.path ends with this interpreter's
    site-packages. A .pth line adds a folder without running the .pth files in it, so the
    repository's editable install of kvswarm stays invisible there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "kvswarm-test-deps.pth").write_text("\n".join(paths) + "\n", encoding="utf-8")
    return python, site


def _tiny_run(directory: Path) -> Path:
    """A run directory with a requests.csv of three requests and no run.json."""
    directory.mkdir()
    records = [
        RequestRecord(
            request_id=f"r{i}",
            worker_id="w0",
            user_id=1,
            scenario="code_generation",
            mode="non_disaggregated",
            endpoint="chat",
            streamed=True,
            start_unix_s=1000.0 + i,
            expected_hit=i > 0,
            prompt_tokens=100,
            cached_tokens=80 if i else 0,
            output_tokens=4,
            output_tokens_source="usage",
            text_chunks=4,
            ttft_s=0.2 if i == 0 else 0.02,
            tpot_s=0.01,
            e2e_s=0.25,
            itl_s=(0.01, 0.01, 0.01),
            status_code=200,
            finish_reason="length",
            ok=True,
        )  # fmt: skip
        for i in range(3)
    ]
    lines = [",".join(CSV_COLUMNS), *(",".join(to_row(record)) for record in records)]
    (directory / "requests.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.mark.slow
def test_pip_install_puts_analysis_under_kvswarm_and_summary_runs_anywhere(
    tmp_path: Path,
) -> None:
    source = _copy_sources(tmp_path)
    python, site = _venv_seeing_this_one(tmp_path / "venv")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--ignore-installed", "--disable-pip-version-check", str(source)],
        check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert not (site / "analysis").exists(), "analysis/ must install as kvswarm.analysis"
    assert (site / "kvswarm" / "analysis" / "headline.py").is_file()
    # The web UI's live charts page is package data.
    assert (site / "kvswarm" / "locust" / "charts.html").is_file()
    for package in _declared_packages():
        assert (site / package.replace(".", "/") / "__init__.py").is_file(), package
    (dist_info,) = site.glob("kvswarm-*.dist-info")
    assert "Apache License" in (dist_info / "licenses" / "LICENSE").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = _tiny_run(elsewhere / "run-1")
    where = subprocess.run(
        [str(python), "-c", "import kvswarm.analysis; print(kvswarm.analysis.__file__)"],
        cwd=elsewhere, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(site)), where
    summary = subprocess.run(
        [str(python.parent / "kvswarm"), "summary", run.name],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "code_generation" in summary.stdout


def _without(modules: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing `modules` fails, as it does when
    the extra that brings them is not installed."""
    block = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    return subprocess.run(
        [sys.executable, "-c", block + code], capture_output=True, text=True, timeout=60
    )


def test_cli_loads_without_the_llamacpp_extra() -> None:
    completed = _without(
        ("gguf", "tokenizers"),
        "from kvswarm.cli import main\nsys.exit(main(['--help']))",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "demo" in completed.stdout and "summary" in completed.stdout


def test_hf_token_sizing_without_tokenizers_names_the_extra_to_install() -> None:
    completed = _without(
        ("tokenizers",),
        "from kvswarm.errors import KvswarmError\n"
        "from kvswarm.tokens import HFSizer\n"
        "try:\n"
        "    HFSizer.load('tokenizer.json')\n"
        "except KvswarmError as exc:\n"
        "    print(exc)\n",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (line,) = completed.stdout.splitlines()
    assert "pip install 'kvswarm[" in line
