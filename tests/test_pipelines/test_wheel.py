"""The package as a user installs it: a wheel, installed without -e, run from another folder.

The wheel is built from the files git tracks (copied out, so the build writes nothing into the
checkout), installed with ``pip install --no-deps --target`` into a folder put first on the path,
and run from a folder outside the clone: the shipped generator and classifiers must be found
inside the installed package (saliency/core/shipped.py), not beside a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from makers import fixture_dataset

LARGEST_FILE = 5_000_000


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("builds the wheel from the files git tracks: needs a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    source = tmp_path_factory.mktemp("wheel-source")
    for name in filter(None, (entry.decode() for entry in listed)):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                             str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return target


def test_the_wheel_holds_the_code_and_the_runtime_artifacts_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        files = {info.filename: info.file_size for info in archive.infolist()}
    for name in ("sngan-mnist", "scenes-classifier", "mnist-classifier"):
        for ext in ("json", "safetensors"):
            assert f"gan_saliency_checkpoints/{name}/model.{ext}" in files
    assert {"pipelines/serve/static/index.html", "pipelines/serve/static/page.js"} <= set(files)
    assert not [f for f in files if f.startswith(("tests/", "data/", "benchmarks/", "docs/"))]
    assert not [f for f in files if "paper-budget" in f or f.endswith((".png", ".jpg", ".jsonl"))]
    assert max(files.values()) < LARGEST_FILE, max(files.items(), key=lambda item: item[1])
    print(f"{wheel.name}: {len(files)} files, {wheel.stat().st_size:,} bytes; largest "
          f"{max(files, key=files.get)} ({max(files.values()):,} bytes)")


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(installed), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_installed_wheel_runs_from_outside_the_clone(installed, tmp_path):
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import pipelines, saliency.core.shipped as s; "
                            "print(pipelines.__file__); print(s.shipped_folder('scenes-classifier'))"],
                           cwd=elsewhere, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])))
    code_file, classifier = probe.stdout.split()
    assert code_file.startswith(str(installed)) and classifier.startswith(str(installed)), probe.stdout

    sample = _run(installed, elsewhere, "sample", "--generator", "sngan-mnist", "--out", "digits.png", "--device", "cpu")
    assert sample.returncode == 0, sample.stderr
    assert (elsewhere / "digits.png").stat().st_size > 0

    root = fixture_dataset(tmp_path / "data")
    out = elsewhere / "pipe"
    write_known_direction_run(out / "discover", "scenes", whiteness_direction(ScenesGenerator()), magnitude=6.0)
    pipeline = _run(installed, elsewhere, "pipeline", "--out", "pipe", "--data-root", str(root), "--pairs", "64",
                    "--unet-steps", "2", "--device", "cpu")
    assert pipeline.returncode == 0, pipeline.stderr[-2000:]
    assert "class vote with scenes-shapes" in pipeline.stdout and "| U-Net (test) |" in pipeline.stdout
