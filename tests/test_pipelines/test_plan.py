"""`saliency pipeline --plan`: every stage measured at its real sizes, nothing run or fetched."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from conftest import run_cli
from makers import fixture_dataset, known_direction_run, random_model, synthesize_pairs


@pytest.fixture
def quick_plan(monkeypatch):
    """Each part of a phase timed for a moment only (the sizes stay the profile's)."""
    import pipelines.plan as plan

    monkeypatch.setattr(plan, "PHASE_SECONDS", 0.05)
    return plan


def test_the_embedded_plan_measures_every_stage_and_writes_plan_json_only(tmp_path, quick_plan):
    from pipelines.pipeline import PipelineConfig, run_pipeline

    root = fixture_dataset(tmp_path / "root")
    out = tmp_path / "pipe"
    lines: list[str] = []
    result = run_pipeline(PipelineConfig(out=out, data_root=root, device="cpu", plan=True, log=lines.append))
    plan = result["plan"]
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]  # nothing else written there
    assert json.loads((out / "plan.json").read_text()) == plan
    rows = {(row["stage"], row["phase"]): row for row in plan["rows"]}
    # the embedded profile's real sizes
    assert rows["discover", "training"]["count"] == 1200 and rows["discover", "training"]["batch"] == 256
    assert rows["discover", "charts"]["count"] == 32
    assert rows["synthesize", "pairs"]["count"] == 10_000
    assert rows["unet", "training"]["count"] == 900 and rows["unet", "training"]["batch"] == 32
    assert rows["eval", "ECSSD"]["count"] == 1000 and rows["eval", "rendered scenes"]["count"] == 500
    for row in plan["rows"]:
        assert row["seconds_per_unit"] > 0 or "set-up" in row["phase"], row
        assert row["seconds"] == pytest.approx(row["seconds_per_unit"] * row["count"], rel=1e-3, abs=0.1)
    for stage in ("discover", "synthesize", "unet", "eval"):
        entry = plan["stages"][stage]
        assert entry["seconds"] == pytest.approx(sum(r["seconds"] for r in plan["rows"] if r["stage"] == stage),
                                                 abs=0.2)
        assert entry["peak_memory"] > 0
    # the disk: ten thousand 64 px pairs in shards, the U-Net and its checkpoint, the charts
    assert 50e6 < plan["stages"]["synthesize"]["disk"] < 500e6
    assert plan["stages"]["unet"]["disk"] > 3 * 4 * 1e6  # mobilenet_v2's decoder and its Adam moments
    assert plan["total_seconds"] == pytest.approx(sum(s["seconds"] for s in plan["stages"].values()), abs=0.5)
    assert plan["random_weights"] == [] and plan["out_of_memory"] == []

    table = quick_plan.plan_table(plan)
    assert "| discover | training |" in table and "| **total** |" in table


def test_a_real_run_after_a_plan_is_not_confused_by_it(tmp_path):
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    root = fixture_dataset(tmp_path / "root")
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"profile": "embedded", "rows": [], "stages": {}}))
    write_known_direction_run(out / "discover", "scenes", whiteness_direction(ScenesGenerator()), magnitude=6.0)
    result = run_cli("pipeline", "--out", str(out), "--data-root", str(root), "--pairs", "100", "--unet-steps", "2",
                     "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "pipeline.json").read_text())["stages"]["unet"]["skipped_last_run"] is False
    assert json.loads((out / "plan.json").read_text())["profile"] == "embedded"


def test_a_batch_that_runs_out_of_memory_is_halved_until_it_fits(quick_plan):
    ctx = quick_plan.PlanContext(config=None, profile=None, device=torch.device("cpu"), tmp=None, data_root=None)
    tried = []

    def measure(batch: int) -> str:
        tried.append(batch)
        if batch > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"timed at {batch}"

    assert quick_plan.fitting_batch(ctx, "unet", 128, measure) == (32, "timed at 32")
    assert tried == [128, 64, 32]
    assert [(o.stage, o.batch, o.fits) for o in ctx.out_of_memory] == [("unet", 128, 32)]
    line = quick_plan.out_of_memory_line({"out_of_memory": [vars(o) for o in ctx.out_of_memory], "device": "cuda:0"})
    assert line == "unet runs out of memory at batch 128 on cuda:0; batch 32 fits"
    # any other error is not taken for a full memory
    with pytest.raises(ValueError):
        quick_plan.fitting_batch(ctx, "unet", 8, lambda batch: (_ for _ in ()).throw(ValueError("bad")))
    assert quick_plan.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert not quick_plan.is_out_of_memory(RuntimeError("shape mismatch"))


def test_the_biggan_plan_without_weights_uses_random_ones_and_lists_the_download(tmp_path, monkeypatch, quick_plan):
    """No weights in the hub's cache: the real architecture with random weights, built in
    memory (nothing written), said in the plan, and the hub download listed first."""
    from directions.generators import build_generator
    from directions.generators.registry import substituted
    from pipelines.pipeline import PROFILES
    from pipelines.train_unet import resolve_architecture

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = type("Config", (), {"weights": None, "classifier": None, "classifier_weights": None})()
    ctx = quick_plan.PlanContext(config=config, profile=PROFILES["biggan"], device=torch.device("cpu"), tmp=tmp_path,
                                 data_root=fixture_dataset(tmp_path / "root"))
    options, factory = quick_plan.generator_weights(ctx)
    assert options == {} and factory is quick_plan.random_biggan_deep
    assert ctx.random_weights == ["BigGAN-deep-128 (the generator)"]
    with substituted("biggan-deep-128", factory):
        generator = build_generator("biggan-deep-128", device="cpu")
        images = generator(generator.sample_latents(1), generator.sample_classes(1))
    assert images.shape == (1, 3, 128, 128) and torch.isfinite(images).all()
    assert sum(p.numel() for p in generator.parameters()) > 50e6  # the real BigGAN-deep-128
    from directions.generators.biggan import build_biggan
    from directions.generators.registry import get_factory

    assert get_factory("biggan-deep-128") is build_biggan  # the real factory is back
    fetch = quick_plan.downloads(ctx, False, resolve_architecture("biggan"))
    assert fetch[0]["what"] == "weights biggan-deep-128" and "huggingface.co" in fetch[0]["from"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-cache", "root"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_the_plan_option_is_on_the_command_line(tmp_path):
    result = run_cli("pipeline", "--help")
    assert result.returncode == 0 and "--plan" in result.stdout and "plan.json" in result.stdout


@pytest.mark.parametrize("scenes_eval", [True, False])
def test_every_evaluation_the_profile_runs_has_its_set_up_counted(tmp_path, quick_plan, scenes_eval):
    """Stage 4's set-up (the model loaded, the tables and pictures written) is timed whether or
    not the profile evaluates rendered scenes too: once per evaluation it runs."""
    from dataclasses import replace

    from pipelines.pipeline import PROFILES, PipelineConfig

    profile = replace(PROFILES["embedded"], scenes_eval=scenes_eval)
    ctx = quick_plan.PlanContext(config=PipelineConfig(out=tmp_path / "pipe", device="cpu"), profile=profile,
                                 device=torch.device("cpu"), tmp=tmp_path, data_root=fixture_dataset(tmp_path / "root"))
    rows = {row.phase: row for row in quick_plan.plan_eval(ctx, random_model(tmp_path / "model"))}
    assert sorted(rows) == (["ECSSD", "rendered scenes", "set-up and outputs"] if scenes_eval
                            else ["ECSSD", "set-up and outputs"])
    assert rows["set-up and outputs"].count == (2 if scenes_eval else 1)
    assert rows["set-up and outputs"].seconds_per_unit > 0


def test_a_plan_for_a_folder_partly_done_projects_the_work_left(tmp_path, quick_plan):
    """The plan counts what OUT already holds as the run would: a finished discovery is skipped
    (its rows done, no time, memory or disk), a checkpoint's steps are not played again."""
    from directions.discovery import CHECKPOINT_NAME
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run
    from pipelines.pipeline import PipelineConfig, run_pipeline
    from saliency.core.checkpoint import save_checkpoint

    root = fixture_dataset(tmp_path / "root")
    finished, resumed = tmp_path / "finished", tmp_path / "resumed"
    write_known_direction_run(finished / "discover", "scenes", whiteness_direction(ScenesGenerator()), magnitude=6.0)
    (resumed / "discover").mkdir(parents=True)
    save_checkpoint(resumed / "discover" / CHECKPOINT_NAME, {"step": 300, "deformator": {"w": torch.zeros(2)}})

    plans = {out.name: run_pipeline(PipelineConfig(out=out, data_root=root, device="cpu", plan=True,
                                                   log=lambda line: None))["plan"] for out in (finished, resumed)}
    rows = {name: {(r["stage"], r["phase"]): r for r in plan["rows"]} for name, plan in plans.items()}
    discover_rows = [r for r in plans["finished"]["rows"] if r["stage"] == "discover"]
    assert discover_rows and all(r["done"] == r["count"] and r["seconds"] == 0 for r in discover_rows)
    assert plans["finished"]["stages"]["discover"] == {"seconds": 0.0, "peak_memory": 0, "disk": 0}
    assert plans["finished"]["done"] == ["discover finished (skipped)"]
    assert plans["finished"]["total_seconds"] == pytest.approx(
        sum(s["seconds"] for k, s in plans["finished"]["stages"].items() if k != "discover"), abs=0.5)

    training = rows["resumed"]["discover", "training"]
    assert training["done"] == 300 and training["seconds"] == pytest.approx(training["seconds_per_unit"] * 900, rel=1e-3)
    assert plans["resumed"]["done"] == ["discover resumes at step 300 of 1,200"]
    assert rows["resumed"]["discover", "charts"]["done"] == 0  # what follows the training is all left
    table = quick_plan.plan_table(plans["resumed"])
    assert "| discover | training |" in table and "900 of 1,200 left (batch 256)" in table
    assert "Already in the output folder: discover resumes at step 300 of 1,200." in table
    assert "| done |" not in table
    assert "| discover | training |" in (finished_table := quick_plan.plan_table(plans["finished"]))
    assert re.search(r"\| discover \| training \| [^|]+ \| done \(batch 256\) \| - \| - \| - \|", finished_table)


def _discovered_and_synthesized(out, pairs):
    """OUT holding a finished discovery (the true whiteness direction) and ``pairs`` pairs."""
    known_direction_run(out / "discover")
    synthesize_pairs(out / "discover", out / "synthesize", pairs)
    return out


def test_a_plan_refuses_what_the_run_would_refuse(tmp_path, quick_plan):
    """More pairs held than --pairs asks (refused before anything is measured), and a U-Net
    checkpoint past the steps asked: the run's refusals, said by the plan."""
    from pipelines.pipeline import PipelineConfig, run_pipeline
    from saliency.core.checkpoint import save_checkpoint
    from saliency.core.errors import UserError
    from saliency.training import CHECKPOINT_NAME

    root = fixture_dataset(tmp_path / "root")
    made = _discovered_and_synthesized(tmp_path / "made", 64)
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"already holds 64 pairs, more than --pairs 32: the run would refuse it"):
        run_pipeline(PipelineConfig(out=made, data_root=root, device="cpu", plan=True, pairs=32, log=lambda line: None))
    assert time.perf_counter() - started < 10 and not (made / "plan.json").exists()  # nothing measured

    past = made  # the 64 pairs asked for: synthesis finished, then a U-Net checkpoint past the steps
    (past / "unet").mkdir()
    save_checkpoint(past / "unet" / CHECKPOINT_NAME, {"step": 5000, "model": {"w": torch.zeros(2)}})
    with pytest.raises(UserError, match=r"unet is at step 5,000, past the 900 steps asked \(--unet-steps\)"):
        run_pipeline(PipelineConfig(out=past, data_root=root, device="cpu", plan=True, pairs=64, log=lambda line: None))


def test_what_a_folder_holds_is_read_without_trusting_its_files(tmp_path):
    """A hand-edited progress.json or a checkpoint that is not one counts as nothing done:
    the plan goes on (the run will say what is wrong with them when it resumes)."""
    from pipelines.pipeline import PROFILES, PipelineConfig, done_in, stage_folders

    out = tmp_path / "out"
    (out / "synthesize").mkdir(parents=True)
    (out / "synthesize" / "progress.json").write_text(json.dumps({"shards": [{"count": "abc"}, {"count": True}, 7]}))
    (out / "unet").mkdir()
    (out / "unet" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":1}')
    done = done_in(stage_folders(PipelineConfig(out=out), PROFILES["embedded"], 100))
    assert done == {"discover": 0, "synthesize": 0, "unet": 0, "eval-ecssd": 0, "eval-scenes": 0, "class-vote": False}
