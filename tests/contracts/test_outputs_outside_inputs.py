"""No command writes into its own inputs: an output that is, contains or lies inside an input
(paths resolved, symlinks followed) is one line, and the input is left exactly as it was."""

from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_cli
from makers import constant_model


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


@pytest.fixture
def inputs(tmp_path):
    """A model folder, a data root with ECSSD, a discovery-run-like folder, a weights folder."""
    model = constant_model(tmp_path / "model", 0.5)
    root = tmp_path / "root"
    (root / "ECSSD" / "images").mkdir(parents=True)
    (root / "ECSSD" / "ground_truth_mask").mkdir(parents=True)
    for folder in ("run", "weights", "pairs", "photos", "source"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "keep.txt").write_text("an input")
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    return tmp_path


# command arguments, the words the one line must hold, the input folder that must stay as it was
CASES = {
    "eval/out-is-model": (["eval", "--dataset", "scenes", "--model", "{t}/model", "--out", "{t}/model"],
                          ["is the input --model"], "model"),
    "eval/out-in-model-via-symlink": (["eval", "--dataset", "scenes", "--model", "{t}/model", "--out", "{t}/link/ev"],
                                      ["lies inside the input --model"], "model"),
    "eval/out-in-dataset": (["eval", "--dataset", "ecssd", "--model", "{t}/model", "--data-root", "{t}/root",
                             "--out", "{t}/root/ECSSD/eval"], ["lies inside the input --data-root"], "root"),
    "train-unet/out-is-data": (["train-unet", "--data", "{t}/pairs", "--out", "{t}/pairs"], ["is the input --data"],
                               "pairs"),
    "train-unet/out-contains-data": (["train-unet", "--data", "{t}/pairs", "--out", "{t}"], ["contains the input --data"],
                                     "pairs"),
    "synthesize/out-in-run": (["synthesize", "--run", "{t}/run", "--n", "5", "--out", "{t}/run/syn"],
                              ["lies inside the input --run"], "run"),
    "discover/out-in-weights": (["discover", "--generator", "biggan-deep-128", "--weights", "{t}/weights",
                                 "--out", "{t}/weights/run"], ["lies inside the input --weights"], "weights"),
    "sample/out-in-weights": (["sample", "--generator", "biggan-deep-128", "--weights", "{t}/weights",
                               "--out", "{t}/weights/grid.png"], ["lies inside the input --weights"], "weights"),
    "predict/out-in-input": (["predict", "--model", "{t}/model", "{t}/photos", "--out", "{t}/photos/maps"],
                             ["lies inside the input folder"], "photos"),
    "predict/out-contains-input": (["predict", "--model", "{t}/model", "{t}/photos", "--out", "{t}"],
                                   ["contains the input folder"], "photos"),
    "export/out-in-model": (["export", "--model", "{t}/model", "--out", "{t}/model/model.onnx"],
                            ["lies inside the input --model"], "model"),
    "import-run/out-in-source": (["import-run", "{t}/source", "--out", "{t}/source/imported"],
                                 ["lies inside the input SOURCE"], "source"),
    "pipeline/out-in-dataset": (["pipeline", "--data-root", "{t}/root", "--out", "{t}/root/ECSSD/pipe"],
                                ["lies inside the input --data-root"], "root"),
    "vote/out-in-dataset": (["vote", "--classifier", "scenes-shapes", "--data-root", "{t}/root",
                             "--out", "{t}/root/ECSSD/classes.json"], ["lies inside the input --data-root"], "root"),
    "fetch-data/into-its-source": (["fetch-data", "ecssd", "--data-root", "{t}/root", "--from", "{t}/root/ECSSD",
                                    "--force"], ["is the input --from"], "root"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_output_inside_an_input_is_refused_and_the_input_untouched(inputs, case):
    args, needles, guarded = CASES[case]
    before = _snapshot(inputs / guarded)
    device = [] if args[0] in ("fetch-data", "export", "import-run") else ["--device", "cpu"]
    result = run_cli(*[a.format(t=inputs) for a in args], *device)
    assert_one_line_error(result, *needles)
    assert _snapshot(inputs / guarded) == before


def test_every_command_with_an_input_and_an_output_is_covered():
    assert {case.split("/")[0] for case in CASES} >= {"eval", "train-unet", "synthesize", "discover", "sample",
                                                     "predict", "export", "import-run", "pipeline", "vote",
                                                     "fetch-data"}


def test_eval_leaves_the_model_folder_as_it_was_and_writes_the_card_only_when_asked(tmp_path):
    import json

    from makers import random_model

    model = random_model(tmp_path / "model")
    before = {path.name: path.read_bytes() for path in model.iterdir()}
    common = ["eval", "--dataset", "scenes", "--model", str(model), "--images", "8", "--device", "cpu"]
    result = run_cli(*common, "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    assert {path.name: path.read_bytes() for path in model.iterdir()} == before
    asked = run_cli(*common, "--out", str(tmp_path / "eval-card"), "--card")
    assert asked.returncode == 0, asked.stderr
    card = json.loads((model / "model.json").read_text())["card"]
    assert sum(split["images"] for split in card["evaluations"]["scenes"]["splits"].values()) >= 8
