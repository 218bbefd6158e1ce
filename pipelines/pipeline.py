"""``saliency pipeline``: the four stages end to end, each skipped when its output is complete.

    DIR/discover      stage 1 (directions.json)
    DIR/synthesize    stage 2 (manifest.json)
    DIR/unet          stage 3 (model.json)
    DIR/eval-ecssd    stage 4 on ECSSD (metrics.json)
    DIR/eval-scenes   stage 4 on rendered scenes with exact masks (embedded profile only)
    DIR/pipeline.json what ran, what was skipped, and how long each stage took

A stage interrupted halfway resumes from its own checkpoint on the next call. A finished stage
is kept only for the options it was made with, and a stage that must run again never leaves a
later stage built on its old output: either stops the call, before anything runs, with one
line. Every input a stage will need (generator weights, the class vote's classifier, the
dataset, the U-Net encoder's weights) is found before stage 1 starts, so a missing file stops
the run in its first seconds, not after hours of discovery.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from pipelines.discover import DiscoverConfig, run_discover
from directions.background import parse_bg_direction
from directions.run_folder import SUMMARY_NAME
from pipelines.evaluate import EvalConfig, run_eval
from pipelines.evaluate import is_complete as eval_complete
from pipelines.synthesize import CLASSES_NAME, SynthesizeConfig, run_synthesize
from pipelines.train_unet import TrainUNetConfig, run_train_unet
from pipelines.train_unet import is_complete as unet_complete
from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, write_json
from saliency.datasets import resolve_data_root
from saliency.core import limits
from saliency.core.errors import UserError
from saliency.core.json_files import read_json
from saliency.core.recorded_paths import resolve_recorded
from saliency.shards import PROGRESS_NAME
from saliency.core.fields import bounded, check_ranges
from saliency.synthesis import MaskRule
from saliency.training import CHECKPOINT_NAME as UNET_CHECKPOINT
from directions.discovery import CHECKPOINT_NAME as DISCOVER_CHECKPOINT


@dataclass(frozen=True)
class PipelineProfile:
    generator: str
    pairs: int
    unet_profile: str
    scenes_eval: bool
    note: str
    discover_steps: int | None = None  # None: the generator's discovery profile
    refine_bg: bool = True  # stage 1: refine the searched h_bg by gradient steps
    shift: float | None = None  # stage 2: the shift along h_bg (None: the run's chosen magnitude)
    bg_vector: str = "run"  # stage 2: "column": the unit column of A that h_bg names
    strict_area: bool = False  # stage 2: min < area < max
    eval_protocol: str = "standard"  # stage 4: "paper" also scores the reference code's evaluation
    precision: str = "auto"  # what --precision auto means for this profile (the reference: fp32 throughout)
    stream: bool = False  # stage 3 trains on fresh pairs from the generator; stage 2's pairs only score it


PROFILES = {
    # Discovery for half the scenes profile's 2,400 steps: h_bg is as good, for a lower RCA, in
    # half the time (measured: docs/results.md, stage 1 on scenes).
    "embedded": PipelineProfile("scenes", 10_000, "embedded", True,
                                "the embedded scenes generator; offline, CPU, minutes", discover_steps=1_200),
    "biggan": PipelineProfile("biggan-deep-128", 100_000, "biggan", False,
                              "this project's choice on BigGAN-deep-128 (GPU; weights from the hub cache or --weights); "
                              "its departures from the paper are in docs/profiles.md"),
    # The reference code's experiment (docs/profiles.md): the authors' BigGAN-128, z ~ N(0, I),
    # K 120, masks at r = 26 on the unit h_bg column with strict area bounds, the plain U-Net.
    # Stage 2 stores the 1,000 pairs that score the U-Net; stage 3 draws 15,000 x 128 fresh ones.
    "paper": PipelineProfile("biggan-128", 1_000, "paper", False,
                             "the paper's experiment on the authors' BigGAN-128 (GPU; --weights G_ema.pth)",
                             refine_bg=False, shift=26.0, bg_vector="column", strict_area=True,
                             eval_protocol="paper", precision="fp32", stream=True),
}


@dataclass
class PipelineConfig:
    out: Path
    profile: str = "embedded"
    data_root: Path | None = None
    device: str = "auto"
    weights: str | None = None
    pairs: int | None = bounded(limits.PAIRS)
    unet_steps: int | None = bounded(limits.STEPS)
    discover_steps: int | None = bounded(limits.STEPS)
    classes: list[int] | None = None
    classifier: str | None = None
    classifier_weights: str | None = None
    encoder: str | None = None
    encoder_weights: str | None = None
    freeze_encoder: bool | None = None
    bg_direction: str | None = None  # stage 1: this direction as h_bg ("INDEX" or "INDEX:MAGNITUDE")
    min_area: float | None = bounded(limits.FRACTION)  # stage 2's mask-area filter (None: synthesize's defaults)
    max_area: float | None = bounded(limits.FRACTION)
    precision: str = "auto"
    progress: bool = True
    plan: bool = False  # measure each stage and write plan.json instead of running (pipelines/plan.py)
    log: Callable[[str], None] = print


def _discovery_complete(folder: Path, bg_direction: str | None) -> bool:
    """Stage 1 is done when its summary exists and, with --bg-direction, names that h_bg (a
    new choice re-runs only the h_bg step: training resumes at its end)."""
    summary_path = folder / SUMMARY_NAME
    if not summary_path.is_file():
        return False
    if bg_direction is None:
        return True
    index, magnitude = parse_bg_direction(bg_direction)
    chosen = _read_json(summary_path).get("bg_direction") or {}
    if not isinstance(chosen, dict):
        return False
    return (chosen.get("index") == index and (chosen.get("extra") or {}).get("chosen_by") == "user"
            and (magnitude is None or chosen.get("magnitude") == magnitude))


def run_pipeline(config: PipelineConfig) -> dict:
    if config.profile not in PROFILES:
        raise UserError(f"unknown profile {config.profile!r}; choose from {', '.join(PROFILES)}")
    check_ranges(config)  # here: a later stage would only see a wrong number after hours
    if config.bg_direction is not None:
        parse_bg_direction(config.bg_direction)
    # Stage 2's area rule, checked before stage 1.
    area = {"min_area": SynthesizeConfig.min_area if config.min_area is None else config.min_area,
            "max_area": SynthesizeConfig.max_area if config.max_area is None else config.max_area}
    MaskRule(**area).validate()
    profile = PROFILES[config.profile]
    if config.precision == "auto":
        config = replace(config, precision=profile.precision)
    if config.plan:  # measured, not run: nothing fetched, nothing but plan.json written
        from pipelines.plan import make_plan

        pairs = requested_pairs(config, profile)
        stages = stage_folders(config, profile, pairs)
        _refuse_changed_or_stale(config, *stages)  # as the run would: the plan is for a run that can go
        done = done_in(stages)
        if done.get("synthesize") is not True and done.get("synthesize", 0) > pairs:
            raise UserError(f"{stages[0]['synthesize']} already holds {done['synthesize']:,} pairs, more than --pairs "
                            f"{pairs:,}: the run would refuse it; remove it or use another --out")
        return {"plan": make_plan(config, profile, resolve_data_root(config.data_root), pairs,
                                  AUTHORS_BIGGAN_WEIGHTS, config.log, done=done)}
    if profile.generator == AUTHORS_BIGGAN_GENERATOR and config.weights is None:
        config = replace(config, weights=str(_authors_biggan(config)))
    data_root = resolve_data_root(config.data_root)
    refuse_output_in_inputs(config.out, {"--data-root": data_root / "ECSSD", "--weights": config.weights,
                                         "--classifier-weights": config.classifier_weights})
    out = ensure_writable_dir(config.out)
    pairs = requested_pairs(config, profile)
    paths, names, complete = stage_folders(config, profile, pairs)
    record_path = out / "pipeline.json"
    record = {"profile": config.profile, "stages": {}}
    if record_path.is_file():  # the earlier calls' record: one line if it is not this tool's
        record["stages"] = read_json(record_path, {"stages?": dict}).get("stages", {})

    def stage(name: str, complete: bool, action: Callable[[], object]) -> None:
        if complete:
            config.log(f"[{name}] complete in {paths[name]}: skipped")
            record["stages"].setdefault(name, {})["skipped_last_run"] = True
            return
        config.log(f"[{name}] running -> {paths[name]}")
        started = time.perf_counter()
        action()
        record["stages"][name] = {"seconds": round(time.perf_counter() - started, 1), "skipped_last_run": False}
        write_json(record_path, record)
        if name != names[-1]:  # after each stage, so a long run can be watched (the last: below, once)
            _write_report(out, config.log, config.progress)

    generator_options = {"weights": config.weights} if config.weights else {}
    discover_dir, unet_dir = paths["discover"], paths["unet"]
    # The settings this call runs with (the profile's, with the options given), printed and recorded.
    record["settings"] = {**asdict(profile), "pairs": pairs, "precision": config.precision,
                          **({"discover_steps": config.discover_steps} if config.discover_steps else {}),
                          **({"unet_steps": config.unet_steps} if config.unet_steps else {})}
    config.log(f"[pipeline] profile {config.profile}: " + ", ".join(
        f"{k} {v}" for k, v in record["settings"].items() if k != "note" and v is not None))
    _refuse_changed_or_stale(config, paths, names, complete)
    check_inputs(config, profile, data_root, config.log)
    stage("discover", complete["discover"], lambda: run_discover(DiscoverConfig(
        generator=profile.generator, out=discover_dir, steps=config.discover_steps or profile.discover_steps,
        device=config.device,
        resume=(discover_dir / DISCOVER_CHECKPOINT).is_file(), progress=config.progress, precision=config.precision,
        generator_options=generator_options, bg_direction=config.bg_direction, refine_bg=profile.refine_bg)))
    stage("synthesize", complete["synthesize"], lambda: run_synthesize(SynthesizeConfig(
        run=discover_dir, count=pairs, out=paths["synthesize"], data_root=data_root, device=config.device,
        classes=config.classes, classifier=config.classifier, classifier_weights=config.classifier_weights,
        progress=config.progress, precision=config.precision, magnitude=_shift(config, profile), bg_vector=profile.bg_vector,
        strict_area=profile.strict_area, log=lambda line: config.log(f"[synthesize] {line}"), **area)))
    stage("unet", complete["unet"], lambda: run_train_unet(TrainUNetConfig(
        data=paths["synthesize"], out=unet_dir, profile=profile.unet_profile, steps=config.unet_steps,
        encoder=config.encoder, encoder_weights=config.encoder_weights, freeze_encoder=config.freeze_encoder,
        device=config.device, resume=(unet_dir / UNET_CHECKPOINT).is_file(), progress=config.progress,
        precision=config.precision, stream=profile.stream)))
    stage("eval-ecssd", complete["eval-ecssd"], lambda: run_eval(EvalConfig(
        dataset="ecssd", model=unet_dir, out=paths["eval-ecssd"], data_root=data_root, device=config.device,
        progress=config.progress, precision=config.precision, card=True, protocol=profile.eval_protocol)))
    if profile.scenes_eval:
        stage("eval-scenes", complete["eval-scenes"], lambda: run_eval(EvalConfig(
            dataset="scenes", model=unet_dir, out=paths["eval-scenes"], device=config.device,
            progress=config.progress, precision=config.precision, card=True)))
    write_json(record_path, record)
    report = _write_report(out, config.log, config.progress)
    tables = {}
    for name in ("eval-ecssd", "eval-scenes"):
        metrics = paths[name] / "metrics.md"
        if metrics.is_file():
            tables[name] = metrics.read_text(encoding="utf-8")
    return {"record": record, "tables": tables, "paths": {k: str(v) for k, v in paths.items()},
            "report": str(report) if report else None}


def stage_folders(config: PipelineConfig, profile: PipelineProfile,
                  pairs: int) -> tuple[dict[str, Path], list[str], dict[str, bool]]:
    """Each stage's folder under OUT, the stages this profile runs in order, and which of them
    OUT already holds finished for this request (those the run skips)."""
    out = Path(config.out)
    paths = {"discover": out / "discover", "synthesize": out / "synthesize", "unet": out / "unet",
             "eval-ecssd": out / "eval-ecssd", "eval-scenes": out / "eval-scenes"}
    names = [name for name in paths if name != "eval-scenes" or profile.scenes_eval]
    complete = {"discover": _discovery_complete(paths["discover"], config.bg_direction),
                "synthesize": _synthesis_complete(paths["synthesize"], pairs),
                "unet": unet_complete(paths["unet"]),
                "eval-ecssd": eval_complete(paths["eval-ecssd"]), "eval-scenes": eval_complete(paths["eval-scenes"])}
    return paths, names, complete


def done_in(stages: tuple[dict[str, Path], list[str], dict[str, bool]]) -> dict[str, int | bool]:
    """What OUT already holds of each stage the run would do: True where the stage is finished
    (skipped), else the units a resumed stage need not do again (discovery's and the U-Net's
    steps in their checkpoints, the pairs in synthesis's finished shards), else 0; and
    ``class-vote``: whether stage 2's class vote is on record (the run does not hold it again).
    Whether a checkpoint or a shard fits these options is for the run to check when it resumes."""
    from saliency.core.checkpoint import checkpoint_value

    paths, names, complete = stages
    done: dict[str, int | bool] = {}
    for name in names:
        if complete[name]:
            done[name] = True
        elif name in ("discover", "unet"):
            checkpoint = paths[name] / (DISCOVER_CHECKPOINT if name == "discover" else UNET_CHECKPOINT)
            done[name] = _count(checkpoint_value(checkpoint, "step") if checkpoint.is_file() else None)
        elif name == "synthesize":
            shards = _read_json(paths[name] / PROGRESS_NAME).get("shards")
            done[name] = sum(_count(entry.get("count")) for entry in shards if isinstance(entry, dict)) \
                if isinstance(shards, list) else 0
        else:
            done[name] = 0
    done["class-vote"] = _vote_on_record(paths["synthesize"], complete["synthesize"])
    return done


def _count(value) -> int:
    """A count read from a file a hand may have edited: a positive int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _vote_on_record(folder: Path, synthesis_complete: bool) -> bool:
    """Whether stage 2's class vote is on record in ``folder``: the run does not hold it again."""
    return synthesis_complete or (folder / CLASSES_NAME).is_file()


AUTHORS_BIGGAN_GENERATOR, AUTHORS_BIGGAN_WEIGHTS = "biggan-128", "biggan-128-authors"


def _authors_biggan(config: PipelineConfig) -> Path:
    """The authors' G_ema.pth as `saliency fetch-weights biggan-128-authors` installs it:
    fetched now, once, if missing (or one line saying how to provide it)."""
    from saliency.downloads.prefetch import ensure, weights_need
    from saliency.downloads.weights import installed_path

    ensure([weights_need(AUTHORS_BIGGAN_WEIGHTS, progress=config.progress)], log=config.log)
    return installed_path(AUTHORS_BIGGAN_WEIGHTS)


def _shift(config: PipelineConfig, profile: PipelineProfile) -> float | None:
    """Stage 2's shift along h_bg: a magnitude named with --bg-direction INDEX:MAGNITUDE, else
    the profile's (the paper's 26), else the one stage 1 chose."""
    if config.bg_direction is not None:
        magnitude = parse_bg_direction(config.bg_direction)[1]
        if magnitude is not None:
            return None  # stage 1 records it as h_bg's magnitude, which stage 2 then takes
    return profile.shift


def _write_report(out: Path, log: Callable[[str], None], progress: bool = True) -> Path | None:
    """OUT/report.html as it stands; a page that cannot be written is a warning, not a failed run."""
    from pipelines.report import write_report

    try:
        return write_report(out, progress=progress)  # a bar: a page of 128 charts takes a while on a CPU
    except (UserError, OSError) as exc:
        log(f"warning: report.html not written ({exc})")
        return None


def requested_pairs(config: PipelineConfig, profile: PipelineProfile) -> int:
    """--pairs, else the count of a finished synthesis (an option left out follows what the
    stage was made with), else the profile's."""
    if config.pairs is not None:
        return config.pairs
    count = _read_json(Path(config.out) / "synthesize" / "manifest.json").get("count")
    return count if isinstance(count, int) and count > 0 else profile.pairs


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _changed_settings(config: PipelineConfig, name: str, folder: Path) -> list[str]:
    """The options this call passes that the finished stage in ``folder`` was made without
    (options left out follow whatever the stage was made with)."""
    passed: dict[str, tuple[object, object]] = {}  # option -> (value asked, value recorded)
    if name == "discover":
        summary = _read_json(folder / SUMMARY_NAME)
        # A run folder never chooses the code that builds the generator: it must be the profile's.
        passed["generator"] = (PROFILES[config.profile].generator, summary.get("generator"))
        passed["--discover-steps"] = (config.discover_steps, summary.get("steps"))
        recorded = (summary.get("generator_options") or {}).get("weights")
        # recorded relative to the discovery folder (or absolute, where no relative path exists)
        recorded = os.path.abspath(resolve_recorded(recorded, folder)) if isinstance(recorded, str) and recorded else None
        passed["--weights"] = (config.weights and os.path.abspath(config.weights), recorded)
    elif name == "synthesize":
        manifest = _read_json(folder / "manifest.json")
        passed["--min-area"] = (config.min_area, manifest.get("min_area"))
        passed["--max-area"] = (config.max_area, manifest.get("max_area"))
        if manifest.get("classes") is not None:  # an unconditional generator ignores --classes
            passed["--classes"] = (None if config.classes is None else sorted(set(config.classes)),
                                   manifest["classes"])
            if config.classes is None and manifest.get("class_vote"):  # the classes came from a vote
                vote = _read_json(folder / "classes.json").get("settings") or {}
                passed["--classifier"] = (config.classifier, vote.get("classifier"))
    elif name == "unet":
        model = _read_json(folder / "model.json")
        architecture, settings = model.get("architecture") or {}, model.get("settings") or {}
        passed["--unet-steps"] = (config.unet_steps, model.get("steps"))
        passed["--encoder"] = (config.encoder, architecture.get("encoder"))
        passed["--encoder-weights"] = (config.encoder_weights, architecture.get("encoder_weights") or "none")
        encoder = {True: "frozen", False: "trained", None: None}
        passed["--freeze-encoder/--train-encoder"] = (encoder[config.freeze_encoder],
                                                      encoder[bool(settings.get("freeze_encoder"))])
    return [f"{option} {asked} (it has {'none' if recorded is None else recorded})"
            for option, (asked, recorded) in passed.items() if asked is not None and asked != recorded]


def _made_something(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds work (a folder a stage created and left empty-handed does not)."""
    if name == "synthesize":
        return (folder / "manifest.json").exists() or (folder / "progress.json").exists()
    if name == "unet":
        return unet_complete(folder) or (folder / UNET_CHECKPOINT).exists()
    return eval_complete(folder)


def _refuse_changed_or_stale(config: PipelineConfig, paths: dict[str, Path], names: list[str],
                             complete: dict[str, bool]) -> None:
    """Before anything runs: a finished stage is never silently kept against options that
    change it, and a stage that must run again never leaves a later stage built on its old
    output. One line says which folder stands in the way."""
    for name in names:
        if complete[name]:
            changed = _changed_settings(config, name, paths[name])
            if changed:
                raise UserError(f"{paths[name]} was made with other settings: {'; '.join(changed)}; "
                                "remove it and the later stages' folders, or use another --out")
    first_to_run = next((i for i, name in enumerate(names) if not complete[name]), len(names))
    if first_to_run == len(names) or names[first_to_run].startswith("eval"):
        return  # the two evaluations are siblings: neither is built on the other
    stale = [paths[name] for name in names[first_to_run + 1:] if _made_something(name, paths[name])]
    if not stale:
        return
    name = names[first_to_run]
    why = (f"--bg-direction {config.bg_direction}: {stale[0]} was made with the run's earlier h_bg"
           if name == "discover" and config.bg_direction is not None
           else f"{name} must run again here ({paths[name]} is not finished for these options), but {stale[0]} "
                "was made from its earlier output")
    raise UserError(f"{why}; remove it and the later stages' folders, or use another --out")


def check_inputs(config: PipelineConfig, profile: PipelineProfile, data_root: Path,
                 log: Callable[[str], None] = print) -> None:
    """Find every file the stages will read, before stage 1: one clear line for the first missing."""
    from directions.generators.registry import get_factory
    from pipelines.train_unet import resolve_architecture
    from saliency.classifiers import build_classifier, default_classifier
    from saliency.datasets import open_dataset
    from saliency.downloads.prefetch import classifier_weights, dataset_need, encoder_weights, ensure, weights_need
    from saliency.unet import converted_encoder_weights

    out = Path(config.out)
    voted = _vote_on_record(out / "synthesize",
                            _synthesis_complete(out / "synthesize", requested_pairs(config, profile)))
    vote_needed = config.classes is None and not voted
    unet_done = unet_complete(out / "unet")
    architecture = resolve_architecture(profile.unet_profile, config.encoder, config.encoder_weights)
    if profile.generator == AUTHORS_BIGGAN_GENERATOR:  # the authors' G_ema.pth, a file
        if config.weights is None or not Path(config.weights).is_file():
            raise UserError(f"--weights {config.weights} not found (the paper profile reads BigGAN-PyTorch's G_ema.pth)")
    elif profile.generator.startswith("biggan"):  # the weights, without building the network
        from directions.generators.biggan import resolve_weight_files

        resolve_weight_files(config.weights)
    else:
        get_factory(profile.generator)
    # What is missing is fetched now, once, or the run stops here with one line.
    ensure([dataset_need("ecssd", data_root, progress=config.progress),
            weights_need(classifier_weights(config.classifier, profile.generator), progress=config.progress)
            if vote_needed and config.classifier_weights is None else None,
            weights_need(encoder_weights(architecture), progress=config.progress) if not unet_done else None],
           log=log)
    open_dataset("ecssd", data_root, "all")  # stage 2 votes on its train split, stage 4 scores it
    if vote_needed:
        name = config.classifier or default_classifier(profile.generator)[0]  # stage 2 says which, and why
        build_classifier(name, config.classifier_weights)  # loads the weights now: a bad file fails here
    if not unet_done:
        converted_encoder_weights(architecture)


def _synthesis_complete(folder: Path, pairs: int) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    return _read_json(manifest).get("count") == pairs
