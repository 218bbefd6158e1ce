"""Run folders that name no machine: every path a run records is relative to the folder of the
file that records it (or is a name: a dataset, a weights id), so a finished pipeline folder can
be moved, or copied to another machine, and every later command still works from it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from makers import fixture_dataset

TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".html", ".txt", ".csv"}
# A discovery of a few seconds (2 directions, 2 steps, 32 px throughout): what matters here is
# what it records, not what it finds. h_bg is named, so no search runs, and the mask-area
# bounds below keep every pair its random direction makes.
TINY_DISCOVER = ("discover", "--generator", "scenes", "--directions", "2", "--steps", "2", "--batch", "4",
                 "--rca-samples", "8", "--bg-samples", "8", "--resolution", "32", "--bg-direction", "0:8",
                 "--no-effects", "--device", "cpu")
ANY_AREA = ("--min-area", "0", "--max-area", "1")


def _ok(*args, cwd: Path):
    result = run_cli(*[str(a) for a in args], cwd=cwd, timeout=600)
    assert result.returncode == 0, f"saliency {' '.join(map(str, args))}:\n{result.stderr}"
    return result


def _text_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES]


def _places_named(folder: Path, places: list[str]) -> list[str]:
    """``file: place`` for every place (an absolute path on this machine) a text file names."""
    found = []
    for path in _text_files(folder):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "data:", text)  # a picture is not a place
        found += [f"{path.relative_to(folder)}: {place}" for place in places if place in text]
    return found


def test_a_moved_pipeline_folder_still_works_and_names_no_machine(tmp_path):
    data = fixture_dataset(tmp_path / "data")
    made = tmp_path / "made"  # the directory the stages ran in
    made.mkdir()
    # Stage by stage into a pipeline's layout (some outputs named relative to the directory the
    # command ran in, some absolute), then the pipeline itself finds every stage complete.
    _ok(*TINY_DISCOVER, "--out", "pipe/discover", cwd=made)
    _ok("synthesize", "--run", "pipe/discover", "--n", "32", "--out", made / "pipe" / "synthesize", *ANY_AREA,
        "--data-root", data, "--device", "cpu", cwd=made)
    _ok("train-unet", "--data", "pipe/synthesize", "--out", "pipe/unet", "--steps", "2", "--device", "cpu", cwd=made)
    _ok("eval", "--dataset", "ecssd", "--model", "pipe/unet", "--out", "pipe/eval-ecssd", "--data-root", data,
        "--card", "--device", "cpu", cwd=made)
    _ok("eval", "--dataset", "scenes", "--model", made / "pipe" / "unet", "--out", "pipe/eval-scenes", "--images", "4",
        "--card", "--device", "cpu", cwd=made)
    first = _ok("pipeline", "--out", "pipe", "--data-root", data, "--device", "cpu", cwd=made)
    assert first.stdout.count("skipped") == 5 and (made / "pipe" / "report.html").is_file()

    pipe = made / "pipe"
    summary = json.loads((pipe / "discover" / "directions.json").read_text())
    assert summary["charts"]["directions"] == ["charts/direction_000.png", "charts/direction_001.png"]
    assert summary["charts"]["overview"] == "charts/overview.png"
    assert json.loads((pipe / "synthesize" / "manifest.json").read_text())["run"] == "../discover"
    vote = json.loads((pipe / "synthesize" / "classes.json").read_text())
    assert vote["dataset"] == "ecssd" and "data_folder" not in vote
    model = json.loads((pipe / "unet" / "model.json").read_text())
    assert model["data"]["folder"] == "../synthesize" and model["data"]["run"] == "../discover"
    assert model["card"]["discovery_run"] == "../discover" and model["card"]["training_data"]["folder"] == "../synthesize"
    assert model["card"]["evaluations"]["ecssd"]["metrics_file"] == "../eval-ecssd/metrics.json"
    assert model["encoder_weights_source"].startswith("saliency fetch-weights mobilenet-v2-imagenet (")
    metrics = json.loads((pipe / "eval-ecssd" / "metrics.json").read_text())
    assert metrics["model"] == "../unet" and metrics["source"]["dataset"] == "ecssd"
    assert metrics["model_data"]["folder"] == "../synthesize" and metrics["model_data"]["run"] == "../discover"

    # The whole folder moves; every command now runs from yet another directory.
    moved = tmp_path / "far" / "away" / "moved"
    moved.parent.mkdir(parents=True)
    shutil.move(str(pipe), str(moved))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _ok("synthesize", "--run", moved / "discover", "--n", "16", "--out", "syn", *ANY_AREA, "--data-root", data,
        "--device", "cpu", cwd=elsewhere)
    # --stream draws fresh pairs from the run that the moved manifest records ("../discover")
    _ok("train-unet", "--data", moved / "synthesize", "--out", "unet", "--steps", "2", "--stream", "--device", "cpu",
        cwd=elsewhere)
    _ok("eval", "--dataset", "scenes", "--model", moved / "unet", "--out", "eval", "--images", "4", "--device", "cpu",
        cwd=elsewhere)
    shutil.copy(data / "ECSSD" / "images" / "0001.jpg", elsewhere / "photo.jpg")
    _ok("predict", "photo.jpg", "--model", moved / "unet", "--out", "maps", "--device", "cpu", cwd=elsewhere)
    assert (elsewhere / "maps" / "photo.map.png").is_file()
    _ok("report", moved, cwd=elsewhere)
    # The pipeline again, one evaluation removed: it runs again into the moved folder (and
    # records itself in the moved model's card), every other stage is kept as it is.
    shutil.rmtree(moved / "eval-ecssd")
    again = _ok("pipeline", "--out", moved, "--data-root", data, "--device", "cpu", cwd=elsewhere)
    assert again.stdout.count("skipped") == 4 and "[eval-ecssd] running" in again.stdout
    assert json.loads((moved / "unet" / "model.json").read_text())["card"]["evaluations"]["ecssd"][
        "metrics_file"] == "../eval-ecssd/metrics.json"
    assert json.loads((elsewhere / "syn" / "manifest.json").read_text())["run"] == os.path.relpath(
        moved / "discover", elsewhere / "syn")

    # Not one text file, in the moved folder or among the new outputs, names a place on this
    # machine: not where the folder was made, nor the directory the commands ran in, nor the
    # home folder (a cache), nor the data.
    places = [str(tmp_path), str(made), str(data), str(Path.home()), str(REPO), os.getcwd()]
    assert len(_text_files(moved)) >= 15
    assert _places_named(moved, places) == []
    assert _places_named(elsewhere, places) == []


def test_recorded_paths_are_relative_to_the_recording_folder_and_absolute_ones_still_read(tmp_path, monkeypatch):
    from saliency.core.recorded_paths import (rebase_recorded, rebased_options, record_path, recorded_options,
                                              resolve_recorded, resolved_options)

    run, synthesis = tmp_path / "pipe" / "discover", tmp_path / "pipe" / "synthesize"
    weights = tmp_path / "weights" / "G.pth"
    for folder in (run, synthesis, weights.parent):
        folder.mkdir(parents=True)
    weights.write_bytes(b"w")
    assert record_path(run, synthesis) == "../discover"
    assert record_path(run / "charts" / "overview.png", run) == "charts/overview.png"
    assert resolve_recorded("../discover", synthesis) == synthesis / ".." / "discover"
    assert rebase_recorded("../discover", synthesis, tmp_path / "pipe" / "unet") == "../discover"
    assert rebase_recorded(None, synthesis, run) is None
    assert recorded_options({"weights": str(weights), "resolution": 32}, run) == {"weights": "../../weights/G.pth",
                                                                                   "resolution": 32}
    assert resolved_options({"weights": "../../weights/G.pth"}, run) == {"weights": str(run / "../../weights/G.pth")}
    assert rebased_options({"weights": "../../weights/G.pth"}, run, tmp_path) == {"weights": "weights/G.pth"}
    assert recorded_options({"weights": None}, run) == {"weights": None}
    # An absolute record is read as it is; a relative one is never read from the working directory.
    monkeypatch.chdir(tmp_path)
    assert resolve_recorded(str(run), synthesis) == run
    assert resolve_recorded("pipe/discover", synthesis) == synthesis / "pipe" / "discover"
    assert resolved_options({"weights": "weights/G.pth"}, run) == {"weights": str(run / "weights/G.pth")}


def test_a_sweep_records_the_generator_weights_relative_to_its_folder(tmp_path):
    from pipelines import sweep
    from pipelines.commands.discover import discover_command as discover
    from saliency.core.errors import UserError

    weights = tmp_path / "G.pth"
    weights.write_bytes(b"w")
    out = tmp_path / "sweeps" / "s"
    fixed = ["--steps", "4", "--batch", "16"]
    plan = sweep.plan_sweep(out, ["directions=4"], [0], [*fixed, "--weights", str(weights)], "scenes", discover)
    assert sweep.spec_of(plan)["weights"] == "../../G.pth"
    assert sweep.recorded_arguments(plan)[-2:] == ["--weights", "../../G.pth"]
    plan.forwarded = [*fixed, f"--weights={weights}"]
    assert sweep.recorded_arguments(plan)[-1] == "--weights=../../G.pth"
    out.mkdir(parents=True)
    # a sweep folder written before: the weights absolute; the same file now is the same option
    (out / sweep.SPEC_NAME).write_text(json.dumps({"options": {**sweep.spec_of(plan), "weights": str(weights)}}))
    assert sweep._check_spec(plan)["weights"] == "../../G.pth"
    other = tmp_path / "H.pth"
    (out / sweep.SPEC_NAME).write_text(json.dumps({"options": {**sweep.spec_of(plan), "weights": str(other)}}))
    with pytest.raises(UserError, match="other fixed options.*weights"):
        sweep._check_spec(plan)


def test_a_discovery_resumes_with_weights_recorded_in_either_form(tmp_path, monkeypatch):
    from pipelines.discover import _same_weights

    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "G.pth").write_bytes(b"w")
    monkeypatch.chdir(tmp_path)
    now = {"generator": "g", "generator_options": {"weights": "../G.pth"}}  # as this call records them
    for recorded in (str(tmp_path / "G.pth"), "../G.pth"):  # absolute, relative to the run
        saved = {"generator": "g", "generator_options": {"weights": recorded}}
        assert _same_weights(saved, now, out) == now
    other = {"generator": "g", "generator_options": {"weights": "H.pth"}}
    assert _same_weights(other, now, out) == other
