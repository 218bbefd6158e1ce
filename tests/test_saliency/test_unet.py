"""Stage 3 and 4: the loss, the schedule, augmentation, training runs and evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from conftest import ECSSD, NEEDS_ECSSD, run_cli
from makers import constant_model, fixture_dataset
from saliency.augment import AugmentedPairs, AugmentSettings, StepBatchSampler, build_augmentation
from saliency.training import UNetTrainSettings, make_schedule, tempered_loss

SHARED_ROOT = ECSSD.parent  # the data root that holds the real ECSSD
TINY_UNET = ["--encoder", "resnet18", "--batch", "4", "--val-count", "16", "--workers", "0", "--device", "cpu"]


# --------------------------------------------------------------------------- loss, schedule
def test_loss_divides_logits_by_the_temperature():
    logits = torch.tensor([[[[2.0]], [[6.0]]]])  # (1, 2, 1, 1): class 1 favoured by 4 nats
    mask = torch.tensor([[[1]]])
    for temperature in (1.0, 10.0):
        margin = 4.0 / temperature
        expected = math.log(1 + math.exp(-margin))  # -log softmax of the true class
        assert tempered_loss(logits, mask, temperature).item() == pytest.approx(expected, rel=1e-5)  # float32
    assert tempered_loss(logits, mask, 10.0) > tempered_loss(logits, mask, 1.0)


def test_learning_rate_schedule_steps_down_as_configured():
    settings = UNetTrainSettings(lr=0.005, lr_step=4, lr_gamma=0.2)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    schedule = make_schedule(optimizer, settings)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == [0.005] * 4
    assert rates[4:8] == pytest.approx([0.001] * 4)
    assert rates[8:] == pytest.approx([0.0002] * 2)


# ---------------------------------------------------------------------------- augmentation
class _RedSquares:
    """Pairs whose mask is exactly where the image is red."""

    height = width = 32

    def __len__(self):
        return 8

    def __getitem__(self, index):
        image = np.full((32, 32, 3), 90, dtype=np.uint8)
        mask = np.zeros((32, 32), dtype=np.uint8)
        top, left = 2 + index, 4 + 2 * index
        image[top:top + 12, left:left + 9] = (230, 20, 20)
        mask[top:top + 12, left:left + 9] = 1
        return image, mask


def test_augmentation_keeps_masks_on_their_objects():
    dataset = AugmentedPairs(_RedSquares(), AugmentSettings(hflip=0.5, scale_min=0.5, color_jitter=0.0))
    flipped_or_cropped = 0
    for index in range(8):
        for seed in range(6):
            image, mask = dataset[(index, seed)]
            image, mask = image.numpy().astype(int), mask.numpy().astype(bool)
            red = (image[..., 0] - image[..., 1]) > 70
            # Only pixels on the object's edge may differ (the image is interpolated, the mask is not).
            square = np.ones((3, 3), dtype=bool)
            edge = ndimage.binary_dilation(mask, square) & ~ndimage.binary_erosion(mask, square)
            disagree = red != mask
            assert not (disagree & ~edge).any(), (index, seed)
            assert disagree.mean() < 0.08 and mask.any()
            original = _RedSquares()[index][1].astype(bool)
            flipped_or_cropped += not np.array_equal(mask, original)
    assert flipped_or_cropped > 20  # the transforms really moved things


def test_augmentation_is_repeatable_per_seed_and_colour_leaves_masks_alone():
    dataset = AugmentedPairs(_RedSquares(), AugmentSettings(hflip=0.5, scale_min=0.6, color_jitter=1.0))
    a, b = dataset[(3, 11)], dataset[(3, 11)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    colour_only = AugmentedPairs(_RedSquares(), AugmentSettings(hflip=0.0, scale_min=1.0, color_jitter=1.0))
    image, mask = colour_only[(2, 5)]
    assert np.array_equal(mask.numpy(), _RedSquares()[2][1]) and not np.array_equal(image.numpy(), _RedSquares()[2][0])
    assert build_augmentation(AugmentSettings(hflip=0, scale_min=1.0, color_jitter=0), 32, 32) is None


def test_batches_depend_only_on_seed_and_step():
    full = list(StepBatchSampler(np.arange(50), 8, steps=20, seed=3))
    resumed = list(StepBatchSampler(np.arange(50), 8, steps=20, seed=3, start=13))
    assert resumed == full[13:]
    assert len(full) == 20 and all(len(batch) == 8 for batch in full)
    epoch = [key[0] for batch in full[:6] for key in batch]  # 6 batches of 8 from 50: no repeats in an epoch
    assert len(set(epoch)) == 48


# ------------------------------------------------------------------------ training, eval
@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory):
    """300 synthetic pairs at 32 px made with the true whiteness direction."""
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run
    from pipelines.synthesize import SynthesizeConfig, run_synthesize

    root = tmp_path_factory.mktemp("pairs")
    run = write_known_direction_run(root / "run", "scenes", whiteness_direction(ScenesGenerator(resolution=32)),
                                    magnitude=6.0, generator_options={"resolution": 32})
    run_synthesize(SynthesizeConfig(run=run, count=300, out=root / "syn", classes=[0, 1, 2], batch_size=128,
                                    shard_size=100, device="cpu", progress=False))
    return root / "syn"


@pytest.fixture(scope="module")
def tiny_model(tiny_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("unet") / "unet"
    result = run_cli("train-unet", "--data", str(tiny_pairs), "--out", str(out), "--steps", "8", "--val-every", "4",
                     "--checkpoint-every", "4", *TINY_UNET)
    assert result.returncode == 0, result.stderr
    return out


def test_train_unet_writes_a_model_folder(tiny_model):
    meta = json.loads((tiny_model / "model.json").read_text())
    assert meta["steps"] == 8 and meta["architecture"]["encoder"] == "resnet18" and meta["architecture"]["classes"] == 2
    assert meta["settings"]["temperature"] == 10.0 and meta["settings"]["lr"] == 0.005
    assert meta["data"]["resolution"] == [32, 32] and meta["data"]["classes"] == [0, 1, 2]
    assert set(meta["validation"]) == {"val_loss", "val_mae", "val_iou"}
    card = meta["card"]  # the model card: what it is and what it was made from
    assert card["generator"] == "scenes" and card["training_data"]["pairs"] == 300 and card["classes"] == [0, 1, 2]
    assert "no human labels" in card["summary"] and "not photographs" in card["limitations"]
    assert card["evaluations"] == {} or set(card["evaluations"]) <= {"ecssd", "scenes"}
    for name in ("model.safetensors", "loss_curve.png", "checkpoint.safetensors", "config.json"):
        assert (tiny_model / name).is_file(), name
    steps = [json.loads(line)["step"] for line in (tiny_model / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 8


def test_eval_on_a_fixture_matches_hand_computed_scores(tmp_path):
    root = fixture_dataset(tmp_path / "root")
    model = constant_model(tmp_path / "model", 0.25)
    out = tmp_path / "eval"
    result = run_cli("eval", "--dataset", "ecssd", "--model", str(model), "--out", str(out), "--data-root", str(root),
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "ecssd" and metrics["split"] == "test" and metrics["images"] == 2
    assert metrics["splits"]["train"]["images"] == 2 and metrics["splits"]["all"]["images"] == 4
    value = round(0.25 * 255) / 255  # the uint8 map holds 64/255 everywhere
    fractions = {}
    for stem in ("0001", "0002", "0003", "0004"):
        gt = np.asarray(Image.open(root / "ECSSD" / "ground_truth_mask" / f"{stem}.png")) > 128
        fractions[stem] = gt.mean()
    expected_all = np.mean([f * (1 - value) + (1 - f) * value for f in fractions.values()])
    expected_test = np.mean([f * (1 - value) + (1 - f) * value for s, f in fractions.items() if s in ("0002", "0004")])
    assert metrics["splits"]["all"]["mae"] == pytest.approx(expected_all, abs=1e-9)
    assert metrics["mae"] == pytest.approx(expected_test, abs=1e-6)
    assert metrics["splits"]["all"]["iou"] == 0.0  # 0.25 < 0.5: nothing predicted salient
    assert metrics["splits"]["all"]["accuracy"] == pytest.approx(1 - np.mean(list(fractions.values())))
    for key in ("mae", "max_f", "s_measure", "max_e", "iou", "accuracy", "images", "split", "seconds"):
        assert key in metrics
    assert set(metrics["references"]) == {"zero map", "Gaussian prior"}
    assert metrics["references"]["zero map"]["all"]["mae"] == pytest.approx(np.mean(list(fractions.values())))
    assert (out / "predictions.png").is_file() and "Gaussian prior (all)" in (out / "metrics.md").read_text()


def test_metrics_agree_with_pysodmetrics_on_the_saved_maps(tiny_model, tmp_path):
    import py_sod_metrics as sod

    root = fixture_dataset(tmp_path / "root")
    out = tmp_path / "eval"
    result = run_cli("eval", "--dataset", "ecssd", "--model", str(tiny_model), "--out", str(out), "--data-root",
                     str(root), "--save-maps", "--protocol", "paper", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    ours = json.loads((out / "metrics.json").read_text())["splits"]["all"]
    mae, fm, sm, em = sod.MAE(), sod.Fmeasure(beta=0.3), sod.Smeasure(), sod.Emeasure()
    for path in sorted((out / "maps").glob("*.png")):
        pred = np.asarray(Image.open(path))
        gt = np.asarray(Image.open(root / "ECSSD" / "ground_truth_mask" / path.name))
        for metric in (mae, fm, sm, em):
            metric.step(pred=pred, gt=gt)
    assert len(list((out / "maps").glob("*.png"))) == 4
    assert ours["mae"] == pytest.approx(mae.get_results()["mae"], abs=1e-6)
    assert ours["max_f"] == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-6)
    assert ours["s_measure"] == pytest.approx(sm.get_results()["sm"], abs=1e-6)
    assert ours["max_e"] == pytest.approx(em.get_results()["em"]["curve"].max(), abs=1e-6)
    assert json.loads((out / "metrics.json").read_text())["paper_protocol"]["all"]["images"] == 4


def test_paper_protocol_is_the_reference_evaluation_by_hand(tmp_path):
    """The reference code's SegmentationInference: the map is the sigmoid of the foreground
    logit, through uint8 (truncated: 0.75 becomes 191/255) and resized back to the image; its MAE
    is the raw mean of |map - mask|. The standard path keeps the float 0.75: both by hand."""
    root = fixture_dataset(tmp_path / "root")
    model = constant_model(tmp_path / "model", 0.75)
    out = tmp_path / "eval"
    result = run_cli("eval", "--dataset", "ecssd", "--model", str(model), "--out", str(out), "--data-root", str(root),
                     "--protocol", "paper", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    areas = [(np.asarray(Image.open(root / "ECSSD" / "ground_truth_mask" / f"{stem}.png")) > 128).mean()
             for stem in ("0001", "0002", "0003", "0004")]
    level = 191 / 255  # int(0.75 * 255): every fixture image differs from 32 px, so each map went through uint8
    paper = metrics["paper_protocol"]["all"]
    assert paper["paper_mae"] == pytest.approx(np.mean([a * (1 - level) + (1 - a) * level for a in areas]), abs=1e-6)
    assert metrics["splits"]["all"]["paper_mae"] == pytest.approx(
        np.mean([a * 0.25 + (1 - a) * 0.75 for a in areas]), abs=1e-6)
    assert paper["iou"] == pytest.approx(np.mean(areas), abs=1e-9)  # 191 >= 128: every pixel salient
    assert "MAE (paper)" in (out / "metrics.md").read_text()


@pytest.mark.skipif(not ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_reference_rows_match_the_published_figures_on_ecssd():
    from saliency.datasets import open_dataset
    from saliency.metrics import SaliencyMetrics, gaussian_prior, zero_map

    data = open_dataset("ecssd", SHARED_ROOT, "all")
    zero, prior = SaliencyMetrics(), SaliencyMetrics()
    for i in range(len(data)):
        truth = data.mask(i)
        zero.update(zero_map(*truth.shape), truth)
        prior.update(gaussian_prior(*truth.shape), truth)
    z, g = zero.results(), prior.results()
    # design.md: zero map MAE 0.235, max F 0.279; Gaussian prior MAE 0.307, max F 0.553, S 0.606, max E 0.723
    assert z["mae"] == pytest.approx(0.235, abs=0.01) and z["max_f"] == pytest.approx(0.279, abs=0.01)
    assert g["mae"] == pytest.approx(0.307, abs=0.01) and g["max_f"] == pytest.approx(0.553, abs=0.01)
    assert g["s_measure"] == pytest.approx(0.606, abs=0.01) and g["max_e"] == pytest.approx(0.723, abs=0.01)


def test_eval_on_rendered_scenes(tiny_model, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("eval", "--dataset", "scenes", "--model", str(tiny_model), "--out", str(out), "--images", "24",
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "scenes" and metrics["split"] == "rendered" and metrics["images"] == 24
    assert metrics["source"]["resolution"] == 32 and metrics["source"]["classes"] == [0, 1, 2]
    again = run_cli("eval", "--dataset", "scenes", "--model", str(tiny_model), "--out", str(tmp_path / "again"),
                    "--images", "24", "--device", "cpu")
    assert again.returncode == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["mae"] == metrics["mae"]  # fixed seed


def test_reference_rows_are_cached_per_set_of_masks(tmp_path, _saliency_cache):
    """Computed once per dataset (they do not depend on the model), read back while the masks
    are the same, computed afresh when one changes."""
    root = fixture_dataset(tmp_path / "root")
    model = constant_model(tmp_path / "model", 0.25)
    unique = root / "ECSSD" / "ground_truth_mask" / "0003.png"  # masks no other test scores
    pixels = np.asarray(Image.open(unique)).copy()
    pixels[:2, :3] = 255 - pixels[:2, :3]
    Image.fromarray(pixels).save(unique)

    def references(out):
        result = run_cli("eval", "--dataset", "ecssd", "--model", str(model), "--out", str(tmp_path / out),
                         "--data-root", str(root), "--device", "cpu")
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / out / "metrics.json").read_text())["references"]

    before = set((_saliency_cache / "reference-rows").glob("*.json"))
    first = references("first")
    entries = set((_saliency_cache / "reference-rows").glob("*.json")) - before
    assert len(entries) == 1
    entry = entries.pop()
    cached = json.loads(entry.read_text())
    assert cached["references"] == first
    cached["references"]["zero map"]["test"]["max_f"] = 0.123  # a mark only the cache carries
    entry.write_text(json.dumps(cached))
    assert references("second")["zero map"]["test"]["max_f"] == 0.123
    mask = root / "ECSSD" / "ground_truth_mask" / "0001.png"
    Image.fromarray(255 - np.asarray(Image.open(mask))).save(mask)
    third = references("third")
    assert third["zero map"]["test"]["max_f"] != 0.123
    assert len(set((_saliency_cache / "reference-rows").glob("*.json")) - before) == 2


@pytest.mark.parametrize("cores, expected", [(2, 2), (16, 4)])
def test_a_profiles_loader_workers_fit_the_machine(monkeypatch, tmp_path, cores, expected):
    """The biggan profile asks for 4 loader workers; a 2-core machine gets 2 (torch warns of
    more, and they would only contend), a larger one the profile's 4; a user's --workers stands."""
    import saliency.core.runtime as runtime
    from pipelines.train_unet import TrainUNetConfig, resolve

    monkeypatch.setattr(runtime, "usable_cores", lambda: cores)
    manifest = {"generator": "biggan-deep-128", "count": 1000}
    _, _, settings = resolve(TrainUNetConfig(data=tmp_path, out=tmp_path / "u", profile="biggan"), manifest)
    assert settings.workers == expected
    _, _, settings = resolve(TrainUNetConfig(data=tmp_path, out=tmp_path / "u", profile="biggan", workers=6), manifest)
    assert settings.workers == 6
