"""The fetch-what-is-missing step (saliency/downloads/prefetch.py): once, from mirrors, and offline in seconds.

Every server here is on loopback; the conftest points every other fetch at a closed port.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest

from conftest import CLOSED_URL, ECSSD, NEEDS_ECSSD, SERVED_REQUESTS, SHARED_TFLITE, assert_one_line_error, run_cli
from makers import constant_model, zip_folder
from pipelines import pipeline as pipeline_module
from pipelines.pipeline import PipelineConfig, run_pipeline
from saliency.core.errors import UserError
from saliency.downloads.weights import installed_path

SHARED_ECSSD = ECSSD
needs_shared = pytest.mark.skipif(not (SHARED_ECSSD.is_dir() and SHARED_TFLITE.is_file()),
                                  reason="needs the real ECSSD and ../shared/weights")


class ReachedStageOne(Exception):
    pass


def _snapshot(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders if folder.exists() for p in folder.rglob("*"))


@needs_shared
def test_pipeline_fetches_the_dataset_and_weights_once_then_finds_them(server, tmp_path, monkeypatch):
    www, base = server
    zip_folder(SHARED_ECSSD / "images", www / "images.zip")
    zip_folder(SHARED_ECSSD / "ground_truth_mask", www / "ground_truth_mask.zip")
    shutil.copyfile(SHARED_TFLITE, www / SHARED_TFLITE.name)
    monkeypatch.setenv("SALIENCY_DATA_MIRROR", base)
    monkeypatch.setenv("SALIENCY_WEIGHTS_MIRROR", base)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    data_root = tmp_path / "data"  # an empty data root

    def stage_one(config):
        raise ReachedStageOne  # every up-front check passed

    monkeypatch.setattr(pipeline_module, "run_discover", stage_one)
    config = PipelineConfig(out=tmp_path / "pipe", data_root=data_root, progress=False, log=lambda line: None)
    with pytest.raises(ReachedStageOne):
        run_pipeline(config)
    fetched = sorted(request.split()[1] for request in SERVED_REQUESTS[str(www)] if request.startswith("GET"))
    assert fetched == ["/ground_truth_mask.zip", "/images.zip", f"/{SHARED_TFLITE.name}"]
    assert len(list((data_root / "ECSSD" / "images").glob("*.jpg"))) == 1000
    assert sorted(p.name for p in data_root.iterdir()) == ["ECSSD"]  # no staging or download left
    assert installed_path("mobilenet-v2-imagenet").is_file()

    SERVED_REQUESTS[str(www)].clear()
    with pytest.raises(ReachedStageOne):
        run_pipeline(config)
    assert SERVED_REQUESTS[str(www)] == []  # the second run finds both and asks for nothing


def test_offline_pipeline_stops_in_seconds_naming_both_ways_and_writes_nothing(tmp_path):
    data_root, torch_home = tmp_path / "data", tmp_path / "torch"
    data_root.mkdir()
    started = time.monotonic()
    result = run_cli("pipeline", "--out", str(tmp_path / "pipe"), "--data-root", str(data_root),
                     env={"TORCH_HOME": str(torch_home), "SALIENCY_DATA_MIRROR": CLOSED_URL,
                          "SALIENCY_WEIGHTS_MIRROR": CLOSED_URL})
    assert time.monotonic() - started < 30
    assert_one_line_error(result, "dataset ECSSD", "saliency fetch-data ecssd", "--from DIR", "SALIENCY_DATA",
                          "weights mobilenet-v2-imagenet", "saliency fetch-weights mobilenet-v2-imagenet --from FILE",
                          "SALIENCY_WEIGHTS_MIRROR")
    assert _snapshot(data_root, torch_home) == []  # nothing half-written in the data root or the cache
    assert not list((tmp_path / "pipe").iterdir())  # no stage ran


def test_a_weights_mirror_folder_is_used_before_the_network(tmp_path):
    if not SHARED_TFLITE.is_file():
        pytest.skip("needs ../shared/weights")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    env = {"TORCH_HOME": str(tmp_path / "torch"), "SALIENCY_WEIGHTS_MIRROR": str(mirror)}
    shutil.copyfile(SHARED_TFLITE, mirror / SHARED_TFLITE.name)
    result = run_cli("fetch-weights", "mobilenet-v2-imagenet", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "torch" / "hub" / "checkpoints" / installed_path("mobilenet-v2-imagenet").name).is_file()
    # A copy with other bytes under the published name is refused, nothing installed.
    (mirror / SHARED_TFLITE.name).write_bytes(b"not the model")
    other = run_cli("fetch-weights", "mobilenet-v2-imagenet", env={**env, "TORCH_HOME": str(tmp_path / "t2")})
    assert_one_line_error(other, "sha256")


def test_an_option_is_checked_before_the_already_installed_exit(tmp_path):
    # The tests' own cache holds mobilenet-v2-imagenet: a bad --url is still refused.
    assert_one_line_error(run_cli("fetch-weights", "mobilenet-v2-imagenet", "--url", "file:///etc/passwd"),
                          "http(s)")
    assert_one_line_error(run_cli("fetch-weights", "mobilenet-v2-imagenet", "--from", str(tmp_path / "nope.tflite")),
                          "not found")


@pytest.mark.skipif(not SHARED_ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_fetch_data_from_a_folder_of_archives_or_an_unpacked_copy(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    zip_folder(SHARED_ECSSD / "images", archives / "images.zip")
    zip_folder(SHARED_ECSSD / "ground_truth_mask", archives / "ground_truth_mask.zip")
    for source, root in ((archives, tmp_path / "r1"), (SHARED_ECSSD, tmp_path / "r2")):
        result = run_cli("fetch-data", "ecssd", "--data-root", str(root), "--from", str(source))
        assert result.returncode == 0, result.stderr
        assert len(list((root / "ECSSD" / "images").glob("*.jpg"))) == 1000
        assert sorted(p.name for p in root.iterdir()) == ["ECSSD"]
    # A folder with neither: one line, nothing created.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("fetch-data", "ecssd", "--data-root", str(tmp_path / "r3"), "--from", str(empty)),
                          "images.zip")
    assert not (tmp_path / "r3").exists()
    # An unpacked copy whose content differs from the published one is refused.
    altered = tmp_path / "altered"
    shutil.copytree(SHARED_ECSSD, altered)
    (altered / "ground_truth_mask" / "0001.png").write_bytes(b"not a mask")
    assert_one_line_error(run_cli("fetch-data", "ecssd", "--data-root", str(tmp_path / "r4"), "--from", str(altered)),
                          "checksum")
    assert sorted(p.name for p in (tmp_path / "r4").iterdir()) == []


def test_stages_run_on_their_own_fetch_too(tmp_path):
    """eval and train-unet go through the same step: offline, the same one line."""
    model = constant_model(tmp_path / "model", 0.5)
    result = run_cli("eval", "--dataset", "ecssd", "--model", str(model), "--out", str(tmp_path / "ev"),
                     "--data-root", str(tmp_path / "data"), "--device", "cpu")
    assert_one_line_error(result, "dataset ECSSD", "--from DIR", "SALIENCY_DATA")
    assert not (tmp_path / "data").exists()


def test_unreachable_sources_are_reported_before_anything_is_fetched(tmp_path, monkeypatch):
    from saliency.downloads.prefetch import dataset_need, ensure, weights_need

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SALIENCY_DATA_MIRROR", CLOSED_URL)
    monkeypatch.setenv("SALIENCY_WEIGHTS_MIRROR", CLOSED_URL)
    fetched = []
    needs = [dataset_need("ecssd", tmp_path / "data"), weights_need("mobilenet-v2-imagenet")]
    assert all(need is not None for need in needs)
    needs = [dataclasses.replace(need, fetch=lambda: fetched.append(1)) for need in needs]
    with pytest.raises(UserError, match="cannot be reached") as error:
        ensure(needs, log=lambda line: None)
    assert "\n" not in str(error.value) and fetched == []
    # Present things are not needs at all.
    (tmp_path / "data" / "ECSSD").mkdir(parents=True)
    assert dataset_need("ecssd", tmp_path / "data") is None
    assert weights_need(None) is None
