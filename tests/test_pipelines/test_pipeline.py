"""`saliency pipeline`: the stages chained, each skipped once complete."""

from __future__ import annotations

import json
import shutil

from conftest import assert_one_line_error, run_cli
from makers import fixture_dataset


def test_pipeline_chains_the_stages_and_skips_finished_ones(tmp_path):
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    root = fixture_dataset(tmp_path / "root")
    out = tmp_path / "pipe"
    # A finished stage 1 (the true whiteness direction), so the test need not train one.
    write_known_direction_run(out / "discover", "scenes", whiteness_direction(ScenesGenerator()), magnitude=6.0)
    args = ("pipeline", "--out", str(out), "--data-root", str(root), "--pairs", "200", "--unet-steps", "4",
            "--device", "cpu")
    result = run_cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "[discover] complete" in result.stdout and "[unet] running" in result.stdout
    assert "| U-Net (test) |" in result.stdout and "| U-Net (rendered) |" in result.stdout
    record = json.loads((out / "pipeline.json").read_text())
    assert set(record["stages"]) == {"discover", "synthesize", "unet", "eval-ecssd", "eval-scenes"}
    assert json.loads((out / "synthesize" / "manifest.json").read_text())["count"] == 200
    assert json.loads((out / "unet" / "model.json").read_text())["steps"] == 4
    ecssd = json.loads((out / "eval-ecssd" / "metrics.json").read_text())
    assert ecssd["dataset"] == "ecssd" and ecssd["split"] == "test"
    assert json.loads((out / "eval-scenes" / "metrics.json").read_text())["dataset"] == "scenes"

    # Again, restating what each stage was made with: nothing runs, nothing is refused.
    again = run_cli(*args, "--min-area", "0.05", "--max-area", "0.5", "--encoder", "mobilenet_v2",
                    "--encoder-weights", "imagenet", "--freeze-encoder", timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped") == 5 and "running" not in again.stdout
    assert "| U-Net (test) |" in again.stdout

    # Another h_bg for the finished run: the pairs, the U-Net and its scores were made with the
    # old one, so nothing runs and the line says which folder stands in the way.
    other = run_cli(*args, "--bg-direction", "0:6", timeout=600)
    assert_one_line_error(other, "--bg-direction 0:6", str(out / "synthesize"), "earlier h_bg")
    bad = run_cli(*args, "--bg-direction", "x", timeout=600)
    assert_one_line_error(bad, "--bg-direction")
    bad = run_cli(*args, "--min-area", "0.6", timeout=600)  # above the default largest area, 0.5
    assert_one_line_error(bad, "area bounds")

    # A finished stage is not kept, silently, against an option that changes it: one line names
    # the folder and the setting, and nothing runs.
    changed = run_cli(*args, "--min-area", "0.1", timeout=600)
    assert_one_line_error(changed, str(out / "synthesize"), "--min-area 0.1 (it has 0.05)")
    changed = run_cli(*args[:-4], "--unet-steps", "8", "--device", "cpu", timeout=600)
    assert_one_line_error(changed, str(out / "unet"), "--unet-steps 8 (it has 4)")
    # More pairs re-open stage 2, but the U-Net was trained on the 200 already there.
    more = run_cli(*args[:-6], "--pairs", "300", "--unet-steps", "4", "--device", "cpu", timeout=600)
    assert_one_line_error(more, "synthesize must run again", str(out / "unet"))
    assert json.loads((out / "synthesize" / "manifest.json").read_text())["count"] == 200
    # The two evaluations are siblings: one removed runs again alone, beside the other. Options
    # left out (here --pairs and --unet-steps) follow what the finished stages were made with.
    shutil.rmtree(out / "eval-ecssd")
    rerun = run_cli(*args[:-6], "--device", "cpu", timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "[eval-ecssd] running" in rerun.stdout and "[eval-scenes] complete" in rerun.stdout


def test_biggan_pipeline_reports_a_missing_classifier_before_any_discovery(tmp_path):
    """Every stage's inputs are found before stage 1: no hour of discovery, then a missing file."""
    from published_layouts import save_random_biggan

    weights = save_random_biggan(tmp_path / "biggan", config={"channel_width": 8, "num_classes": 1000})
    root = fixture_dataset(tmp_path / "root")
    out = tmp_path / "pipe"
    base = ("pipeline", "--profile", "biggan", "--weights", str(weights), "--data-root", str(root), "--out", str(out),
            "--device", "cpu")
    missing = tmp_path / "nowhere" / "resnet18.pth"
    result = run_cli(*base, "--classifier", "resnet18-imagenet", "--classifier-weights", str(missing))
    assert_one_line_error(result, str(missing), "not found")
    assert not (out / "discover").exists()  # not one discovery step ran

    # no ResNet-18 in torchvision's cache and no MobileNetV2 fetched: says what to fetch, still before stage 1
    result = run_cli(*base, env={"TORCH_HOME": str(tmp_path / "empty-home")})
    assert_one_line_error(result, "fetch-weights")
    assert not (out / "discover").exists()


def test_finished_stages_are_checked_against_the_options_passed(tmp_path):
    """The comparisons behind the one-line refusals, on the records a finished run leaves."""
    from directions.run_folder import SUMMARY_NAME
    from pipelines.pipeline import PipelineConfig, _changed_settings

    discover, synthesize = tmp_path / "discover", tmp_path / "synthesize"
    discover.mkdir()
    synthesize.mkdir()
    (discover / SUMMARY_NAME).write_text(json.dumps({"generator": "scenes", "steps": 100,
                                                     "generator_options": {"weights": "../G/a.pth"}}))
    (synthesize / "manifest.json").write_text(json.dumps(
        {"count": 10, "min_area": 0.05, "max_area": 0.5, "classes": [3, 7], "class_vote": "classes.json"}))
    (synthesize / "classes.json").write_text(json.dumps({"settings": {"classifier": "resnet18-imagenet"}}))

    def changed(name, **options):
        return _changed_settings(PipelineConfig(out=tmp_path, **options), name, tmp_path / name)

    assert changed("discover") == [] and changed("synthesize") == []  # nothing passed: nothing compared
    # the run records its weights relative to its folder: the same file, however it is named now
    assert changed("discover", weights=str(tmp_path / "G" / "a.pth"), discover_steps=100) == []
    assert changed("discover", weights=str(tmp_path / "G" / "b.pth")) == [f"--weights {tmp_path / 'G/b.pth'} "
                                                                         f"(it has {tmp_path / 'G/a.pth'})"]
    (discover / SUMMARY_NAME).write_text(json.dumps({"generator": "scenes", "steps": 100,  # an older run: absolute
                                                     "generator_options": {"weights": str(tmp_path / "G/a.pth")}}))
    assert changed("discover", weights=str(tmp_path / "G" / "a.pth")) == []
    assert changed("synthesize", classes=[7, 3, 7], classifier="resnet18-imagenet", min_area=0.05) == []
    assert changed("synthesize", classifier="mobilenet-v2-imagenet") == [
        "--classifier mobilenet-v2-imagenet (it has resnet18-imagenet)"]
    assert changed("synthesize", classes=[3]) == ["--classes [3] (it has [3, 7])"]
    # classes named by the user, not voted: the classifier plays no part
    assert changed("synthesize", classes=[3, 7], classifier="mobilenet-v2-imagenet") == []
    # a discovery folder of another generator than the profile's (a file naming code) is never kept
    (discover / SUMMARY_NAME).write_text(json.dumps({"generator": "os:system", "steps": 100}))
    assert changed("discover") == ["generator scenes (it has os:system)"]
