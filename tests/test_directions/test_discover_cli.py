"""`saliency discover` end to end, as a user runs it (kills and resumes: test_fault_injection.py)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from conftest import run_cli

TINY = ["--resolution", "32", "--train-resolution", "32", "--directions", "4", "--batch", "8",
        "--bg-samples", "16", "--refine-steps", "10", "--device", "cpu"]


def test_learned_directions_beat_chance_and_a_frozen_baseline_on_the_same_budget(tmp_path):
    """The game really learns: on the same short budget, learned directions are told apart far
    better than chance (1/K) and than a frozen random A (measured: 0.58 against 0.37 and 0.125)."""
    budget = ["--directions", "8", "--batch", "32", "--steps", "150", "--lr", "2e-3", "--resolution", "32",
              "--train-resolution", "32", "--rca-samples", "512", "--no-charts", "--no-effects", "--no-bg-search",
              "--device", "cpu"]
    rca = {}
    for deformator in ("ortho", "random"):
        result = run_cli("discover", "--out", str(tmp_path / deformator), "--deformator", deformator, *budget)
        assert result.returncode == 0, result.stderr
        rca[deformator] = json.loads((tmp_path / deformator / "directions.json").read_text())["rca"]
    assert rca["ortho"] > 1 / 8 + 0.3, rca
    assert rca["ortho"] > rca["random"] + 0.1, rca


def test_a_tiny_discovery_run_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    result = run_cli("discover", "--out", str(out), "--steps", "12", "--checkpoint-every", "5", *TINY)
    assert result.returncode == 0, result.stderr
    assert "RCA" in result.stdout and "bg_cos" in result.stdout
    summary = json.loads((out / "directions.json").read_text())
    assert summary["steps"] == 12 and summary["num_directions"] == 4 and summary["generator"] == "scenes"
    bg = summary["bg_direction"]
    assert bg["sign"] in (1, -1) and bg["magnitude"] > 0 and len(bg["vector"]) == 32
    report = summary["ground_truth"]
    assert set(report["background"]) >= {"bg_cos", "bg_mask_iou", "oracle_mask_iou"}
    assert len(report["factors"]) == 4
    tensors = load_file(str(out / "directions.safetensors"))
    assert tuple(tensors["directions"].shape) == (32, 4) and tuple(tensors["bg_direction"].shape) == (32,)
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert charts == ["direction_000.png", "direction_001.png", "direction_002.png", "direction_003.png", "overview.png"]
    assert (out / "bg_candidates.png").exists()
    ranked = json.loads((out / "bg_candidates.json").read_text())["ranked"]
    assert {c["index"] for c in ranked} >= {0, 1, 2, 3}

    # h_bg override on the finished run, without retraining
    again = run_cli("discover", "--out", str(out), "--steps", "12", "--resume", "--bg-direction", "2:6", *TINY)
    assert again.returncode == 0, again.stderr
    chosen = json.loads((out / "directions.json").read_text())["bg_direction"]
    assert chosen["index"] == 2 and chosen["magnitude"] == 6.0 and chosen["extra"]["chosen_by"] == "user"

    # A choice that whitens nothing (a tiny shift) scores <= 0 yet is the user's to make: kept as
    # reliable, so synthesize uses it instead of sending the user back to choose one.
    weak = run_cli("discover", "--out", str(out), "--steps", "12", "--resume", "--bg-direction", "2:0.01", *TINY)
    assert weak.returncode == 0, weak.stderr
    chosen = json.loads((out / "directions.json").read_text())["bg_direction"]
    assert chosen["score"] <= 0 and chosen["reliable"]




@pytest.mark.parametrize("native_bf16, generator, expected", [
    (True, "sngan-mnist", "bf16"),  # measured 1.8x faster at the same RCA (docs/benchmarks.md)
    (False, "sngan-mnist", "fp32"),  # emulated bf16 is slower than fp32
    (True, "scenes", "fp32"),  # measured no faster
])
def test_precision_auto_plays_the_game_in_bf16_only_where_measured_faster(monkeypatch, native_bf16, generator,
                                                                          expected):
    import torch

    from pipelines.discover import DiscoverConfig, build_game
    from saliency.core import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
    game = build_game(DiscoverConfig(generator=generator, device="cpu"), torch.device("cpu"), 1)
    assert game.settings.precision == expected
    forced = build_game(DiscoverConfig(generator=generator, device="cpu", precision="fp32"), torch.device("cpu"), 1)
    assert forced.settings.precision == "fp32"


@pytest.mark.parametrize("native_bf16, spec, warned", [(False, "bf16", True), (True, "bf16", False),
                                                      (False, "auto", False), (False, "fp32", False)])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_is_warned_in_one_line(monkeypatch, capsys, native_bf16, spec,
                                                                        warned):
    import warnings

    import torch

    from pipelines import cli
    from saliency.core import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert runtime.resolve_precision(spec, torch.device("cpu"), cpu_bf16=True) == (
            spec if spec != "auto" else "fp32")
    assert [w.category for w in caught] == ([runtime.EmulatedPrecisionWarning] if warned else [])
    if warned:  # as the command line shows it: one line, no file and line number
        cli._one_line_warnings(warnings.showwarning)(caught[0].message, caught[0].category, caught[0].filename,
                                                     caught[0].lineno)
        assert capsys.readouterr().err.splitlines() == [f"saliency: warning: {caught[0].message}"]
