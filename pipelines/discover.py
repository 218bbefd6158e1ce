"""``saliency discover``: stage 1 end to end, for one generator.

train A and R (resumable) -> RCA on fresh samples -> charts -> h_bg (ranked candidates,
optional refinement) -> ground-truth report where the generator has one -> directions.json.

A run folder holds::

    config.json               the settings of the run (written first)
    checkpoint.safetensors    training state, replaced atomically every N steps
    metrics.jsonl             loss, CE, shift L1 and accuracy every log interval
    directions.safetensors    A (d x K) and h_bg (d,) (no h_bg when the search was off)
    charts/                   one chart per direction, overview.png
    bg_candidates.json/.png   the ranked h_bg candidates and a picture of the best ones
    directions.json           the summary; written last, so its presence means "complete"
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from directions import background as bg
from directions.charts import direction_strip, save_direction_charts
from directions.deformators import build_deformator
from directions.effects import direction_effects
from directions.discovery import CHECKPOINT_NAME, TrainSettings, rca_batches, reconstructor_accuracy, train
from directions.generators import Generator, build_generator
from directions.ground_truth import background_report, factor_table, has_ground_truth
from directions.reconstructors import build_reconstructor
from directions.run_folder import CONFIG_NAME, SUMMARY_NAME, TENSORS_NAME, write_report
from directions.prepared_models import prepare_frozen_generator, prepare_reconstructor
from saliency.core import distributed
from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, write_json, write_safetensors
from saliency.core.checkpoint import check_identity, load_checkpoint
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges
from saliency.core.progress import progress_bar
from saliency.core.recorded_paths import record_path, recorded_options, resolve_recorded
from saliency.core.runtime import configure_device, resolve_precision
from saliency.core.visualize import save_grid



@dataclass(frozen=True)
class Profile:
    """A generator's default discovery settings."""

    deformator: str
    num_directions: int
    reconstructor: str
    batch_size: int
    steps: int
    lr: float
    deformator_lr: float | None = None
    # Generator options for training only. Directions live in latent space, so a generator
    # with a resolution option can play the game at a smaller size and be charted, searched
    # and synthesized at its full one.
    train_options: tuple[tuple[str, object], ...] = ()
    bg_search: bool = True  # look for h_bg (pointless where nothing has a background, e.g. MNIST)
    note: str = ""
    # ``--precision auto`` plays the game in bf16 autocast on a CPU with native bf16 only where
    # that was measured faster at the same RCA (docs/benchmarks.md, "bf16 in the discovery game").
    cpu_bf16: bool = False


PROFILES: dict[str, Profile] = {
    # The paper's BigGAN settings (section 4 and the reference code).
    "biggan-deep-128": Profile("ortho", 128, "resnet18", 32, 100_000, 1e-4, note="paper"),
    # Measured on a 2-core CPU to meet the acceptance bar in minutes (docs/results.md).
    "scenes": Profile("ortho", 32, "lenet", 256, 2_400, 1e-3, train_options=(("resolution", 32),), note="measured"),
    "dcgan-faces": Profile("ortho", 32, "lenet", 32, 1_000, 1e-3, note="measured"),
    # The paper's settings for its other generators (section 4): checkpoints that drop in.
    "biggan-128": Profile("ortho", 120, "resnet18", 32, 100_000, 1e-4, note="paper"),
    "sngan-anime": Profile("ortho", 128, "lenet", 128, 100_000, 1e-4, note="paper"),
    "proggan-celebahq": Profile("unit", 200, "resnet18", 10, 200_000, 1e-4, note="paper"),
    # The paper's MNIST A, K and R (unit-norm, 64, LeNet-5); batch 64, 1,200 steps and lr 1e-3 instead of
    # 128, 1e5 and 1e-4: the CPU budget of the tables in docs/results.md (a few minutes a run). The
    # paper's budget is the same command with --batch 128 --steps 100000 --lr 1e-4.
    "sngan-mnist": Profile("unit", 64, "lenet5", 64, 1_200, 1e-3, bg_search=False, cpu_bf16=True,
                           note="paper A, K, R; batch, steps, lr: the measured CPU budget of docs/results.md's tables"),
}


def default_profile(generator: Generator) -> Profile:
    """For a user's generator: the paper's small-GAN choices, scaled to its latent size."""
    k = min(generator.latent_dim, 64)
    reconstructor = "resnet18" if generator.resolution >= 64 else "lenet"
    return Profile("ortho", k, reconstructor, 32, 20_000, 1e-4, note="generic")


@dataclass
class DiscoverConfig:
    generator: str = "scenes"
    out: Path = Path("checkpoints/discover")
    deformator: str | None = None
    num_directions: int | None = bounded(limits.DIRECTIONS)
    reconstructor: str | None = None
    steps: int | None = bounded(limits.STEPS)
    batch_size: int | None = bounded(limits.GAME_BATCH)
    lr: float | None = bounded(limits.POSITIVE)
    shift_loss_weight: float = bounded(limits.NON_NEGATIVE, 0.25)  # the paper's lambda
    seed: int = bounded(limits.SEED, 0)
    device: str = "auto"
    resume: bool = False
    checkpoint_every: int = bounded(limits.COUNT, 250)
    refine_bg: bool = True
    bg_search: bool | None = None  # None: the profile's choice
    bg_direction: str | None = None  # "INDEX" or "INDEX:MAGNITUDE"
    bg_samples: int = bounded(limits.BG_SAMPLES, 128)
    refine_steps: int = bounded(limits.REFINE_STEPS, 300)
    rca_samples: int = bounded(limits.RCA_SAMPLES, 2048)
    # RCA every N steps into metrics.jsonl (0: only at the end)
    rca_every: int = bounded(limits.NON_NEGATIVE_COUNT, 0)
    # > 0: stop once the RCA moved by less than this over stop_rca_window steps
    stop_rca_change: float = bounded(limits.NON_NEGATIVE, 0.0)
    stop_rca_window: int = bounded(limits.COUNT, 20_000)
    precision: str = "auto"
    train_resolution: int | None = bounded(limits.RESOLUTION)
    charts: bool = True
    effects: bool = True
    log_every: int = bounded(limits.COUNT, 50)
    compile: bool = False  # torch.compile G and R for the game
    progress: bool = True
    generator_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        check_ranges(self)
        limits.RESOLUTION.check("resolution", self.generator_options.get("resolution"))
        if self.bg_direction is not None:
            bg.parse_bg_direction(self.bg_direction)


def resolved_settings(config: DiscoverConfig, generator: Generator) -> tuple[Profile, TrainSettings]:
    profile = PROFILES.get(config.generator) or default_profile(generator)
    profile = replace(
        profile,
        deformator=config.deformator or profile.deformator,
        num_directions=config.num_directions or profile.num_directions,
        reconstructor=config.reconstructor or profile.reconstructor,
        batch_size=config.batch_size or profile.batch_size,
        steps=config.steps or profile.steps,
        lr=config.lr or profile.lr,
    )
    settings = TrainSettings(
        steps=profile.steps, batch_size=profile.batch_size, lr=profile.lr,
        deformator_lr=profile.deformator_lr, seed=config.seed, shift_loss_weight=config.shift_loss_weight,
        checkpoint_every=config.checkpoint_every, log_every=config.log_every,
        rca_every=config.rca_every, rca_samples=config.rca_samples,
        plateau_change=config.stop_rca_change, plateau_window=config.stop_rca_window,
    )
    return profile, settings


def _candidate_chart(generator: Generator, candidates: list[bg.Candidate], vectors: dict, z, classes,
                     path: Path, samples: int = 6) -> None:
    """Row 0: the samples; then, for each top candidate, the samples shifted by it."""
    rows = [generator(z[:samples], None if classes is None else classes[:samples]).float().cpu()]
    for candidate in candidates:
        vector = vectors[candidate.index] * candidate.sign
        shifted = direction_strip(generator, vector, z[:samples], None if classes is None else classes[:samples],
                                  shifts=(candidate.magnitude,))
        rows.append(shifted)
    save_grid(torch.cat(rows), path, nrow=samples)


def choose_background(generator: Generator, directions: torch.Tensor, config: DiscoverConfig, out: Path,
                      criterion: bg.BackgroundCriterion) -> tuple[dict, torch.Tensor, dict]:
    """Rank every direction as h_bg, refine the best, keep whichever scores higher on held-out
    samples (or take the user's ``--bg-direction``). Returns (summary, h_bg, evaluation batch)."""
    z, classes = bg.evaluation_batch(generator, config.bg_samples, seed=config.seed + 101)
    held_z, held_c = bg.evaluation_batch(generator, config.bg_samples, seed=config.seed + 202)
    vectors = {k: directions[:, k] for k in range(directions.shape[1])}

    if config.bg_direction is not None:
        index, magnitude = bg.parse_bg_direction(config.bg_direction)
        if index >= directions.shape[1]:
            raise ConfigError(f"`bg_direction` {index}: the run has directions 0..{directions.shape[1] - 1}")
        magnitudes = bg.DEFAULT_MAGNITUDES if magnitude is None else (magnitude,)
        with progress_bar(2 * len(magnitudes), "h_bg scoring", enabled=config.progress, leave=False,
                          unit="shift") as bar:
            scored = bg.score_direction(generator, vectors[index], magnitudes, held_z, held_c, criterion, progress=bar)
        sign, magnitude, terms = max(scored, key=lambda item: item[2]["score"])
        winner = bg.Candidate(index=index, sign=sign, magnitude=magnitude, **terms, extra={"chosen_by": "user"})
        ranked = [winner]
    else:
        # One bar for the search: every direction at both signs and every magnitude, then the
        # best re-scored on held-out samples (so it competes fairly with the refinement).
        shifts = directions.shape[1] * 2 * len(bg.DEFAULT_MAGNITUDES) + 2
        with progress_bar(shifts, "h_bg search", enabled=config.progress, leave=False, unit="shift") as bar:
            ranked = bg.rank_directions(generator, directions, z, classes, criterion, progress=bar)
            best = ranked[0]
            held = bg.score_direction(generator, vectors[best.index] * best.sign, (best.magnitude,), held_z, held_c,
                                      criterion, progress=bar)
        winner = replace(best, **held[0][2], extra={"chosen_by": "search", "search_score": best.score})
        if config.refine_bg and config.refine_steps > 0:
            # One bar: the refinement's steps, then the refined direction's shifts scored.
            total = config.refine_steps + 2 * len(bg.DEFAULT_MAGNITUDES) + 2
            with progress_bar(total, "h_bg refine", enabled=config.progress, leave=False) as bar:
                refined = bg.refine_direction(generator, vectors[best.index] * best.sign, best.magnitude, criterion,
                                              steps=config.refine_steps, seed=config.seed + 303, progress=bar)
                # Sign and magnitude chosen on the search samples, scored on the held-out ones,
                # exactly like the search's winner.
                scored = bg.score_direction(generator, refined, bg.DEFAULT_MAGNITUDES, z, classes, criterion,
                                            progress=bar)
                sign, magnitude, _ = max(scored, key=lambda item: item[2]["score"])
                terms = bg.score_direction(generator, refined * sign, (magnitude,), held_z, held_c, criterion,
                                           progress=bar)[0][2]
            vectors["refined"] = refined
            refined_candidate = bg.Candidate(index="refined", sign=sign, magnitude=magnitude, **terms,
                                             extra={"chosen_by": "refinement", "start": best.index,
                                                    "cos_to_start": round(float(torch.dot(refined, vectors[best.index] * best.sign)), 4)})
            ranked = [refined_candidate] + ranked
            if refined_candidate.score > winner.score:
                winner = refined_candidate
    h_bg = vectors[winner.index] * winner.sign
    write_json(out / "bg_candidates.json", {"criterion": asdict(criterion), "ranked": [c.as_dict() for c in ranked[:50]],
                                            "winner": winner.as_dict()})
    _candidate_chart(generator, ranked[:5], vectors, held_z, held_c, out / "bg_candidates.png")
    # A direction the user named is trusted as theirs (synthesize would otherwise refuse it and
    # send them back to name one); a searched one only where it scored above zero.
    chosen = winner.extra.get("chosen_by") == "user"
    summary = {**winner.as_dict(), "threshold": criterion.threshold, "reliable": chosen or winner.score > 0,
               "vector": [round(float(v), 6) for v in h_bg]}
    return summary, h_bg, {"z": held_z, "classes": held_c}


@dataclass
class Game:
    """Stage 1's players, built and made cheap: the frozen generator (and the one the game
    renders with, when it trains at another resolution), A, R, and the run's identity."""

    generator: Generator
    game_generator: Generator
    deformator: torch.nn.Module
    reconstructor: torch.nn.Module
    profile: Profile
    settings: TrainSettings
    options: dict  # as recorded: weights relative to the run folder
    train_options: dict
    identity: dict


def run_discover(config: DiscoverConfig) -> dict:
    """Run stage 1 into ``config.out``; returns the summary written to directions.json."""
    config.validate()
    refuse_output_in_inputs(config.out, {"--weights": config.generator_options.get("weights")})
    out = ensure_writable_dir(config.out)
    started = time.perf_counter()
    saved = _check_run_folder(config, out)
    ctx = distributed.context()
    distributed.barrier()  # every process has checked the folder before any of them writes in it
    game = build_game(config, distributed.device_for(config.device, ctx), ctx.world)
    if saved is not None:
        check_identity(_same_weights(saved, game.identity, out), game.identity, out)  # before anything changes
    if not (out / CHECKPOINT_NAME).exists() and ctx.is_main:
        write_json(out / CONFIG_NAME, {"identity": game.identity, "profile": asdict(game.profile),
                                       "settings": asdict(game.settings),
                                       "command": asdict(config) | {"out": ".", "generator_options": recorded_options(
                                           config.generator_options, out)}})
    if config.bg_direction is not None and bg.parse_bg_direction(config.bg_direction)[0] >= game.profile.num_directions:
        raise ConfigError(f"`bg_direction` {config.bg_direction}: the run has directions "
                        f"0..{game.profile.num_directions - 1}")

    # The summary marks a finished run: a resumed run is unfinished until it writes a new one
    # (removed only once the checkpoint has loaded: a refused resume leaves the run as it was).
    def unfinish() -> None:
        if ctx.is_main:
            (out / SUMMARY_NAME).unlink(missing_ok=True)

    history = train(game.game_generator, game.deformator, game.reconstructor, game.settings, out, game.identity,
                    resume=config.resume, progress=config.progress, on_ready=unfinish)
    if not ctx.is_main:  # under torchrun, rank 0 alone scores, charts and writes the run
        return {"part": True, "rank": ctx.rank}
    measured = _measure_directions(config, out, game)
    choice = _choose_h_bg(config, out, game, measured.directions)
    return _write_run(config, out, game, history, started, measured, choice)


def _check_run_folder(config: DiscoverConfig, out: Path) -> dict | None:
    """A new run needs a folder without one; --resume needs one of the same generator. Returns
    the saved run's identity when resuming."""
    checkpoint = out / CHECKPOINT_NAME
    if config.resume and not checkpoint.exists():
        raise ConfigError(f"`resume`: {out} holds no discovery checkpoint ({CHECKPOINT_NAME})")
    if not checkpoint.exists() and (out / SUMMARY_NAME).exists():
        raise ConfigError(f"{out} holds a finished run without its checkpoint; choose another `out`")
    if checkpoint.exists() and not config.resume:
        raise ConfigError(f"{out} already holds a discovery run: pass `resume` to continue it, or another `out`")
    if not config.resume:
        return None
    saved = load_checkpoint(checkpoint).get("identity", {})
    if saved.get("generator") != config.generator:
        raise UserError(f"cannot resume {out}: it is a run of generator {saved.get('generator')!r}, "
                        f"not {config.generator!r}")
    return saved


def _same_weights(saved: dict, identity: dict, out: Path) -> dict:
    """The saved identity, its generator weights taken as this call's where both name the same
    file: a run records them relative to its folder (or absolute, where no relative path exists)."""
    before = saved.get("generator_options")
    now = identity.get("generator_options") or {}
    if not isinstance(before, dict) or not isinstance(before.get("weights"), str) or "weights" not in now:
        return saved
    same = (os.path.abspath(resolve_recorded(before["weights"], out))
            == os.path.abspath(resolve_recorded(now["weights"], out)))
    return {**saved, "generator_options": {**before, "weights": now["weights"]}} if same else saved


def build_game(config: DiscoverConfig, device, world: int) -> Game:
    generator = build_generator(config.generator, device=device, **config.generator_options)
    configure_device(generator.device)
    profile, settings = resolved_settings(config, generator)
    settings = replace(settings, precision=resolve_precision(config.precision, generator.device,
                                                             cpu_bf16=profile.cpu_bf16))
    options = {k: v for k, v in config.generator_options.items() if v is not None}
    recorded = recorded_options(options, config.out)  # weights relative to the run folder
    train_options = dict(profile.train_options)
    if config.train_resolution is not None:
        train_options["resolution"] = config.train_resolution
    if "resolution" in options and config.train_resolution is None:
        train_options.pop("resolution", None)  # an explicit --resolution is used throughout
    game_generator = generator
    if train_options:
        game_generator = build_generator(config.generator, device=device, **(options | train_options))
    identity = {
        "generator": config.generator, "generator_options": recorded, "train_options": train_options,
        "latent_dim": generator.latent_dim,
        "deformator": profile.deformator, "num_directions": profile.num_directions,
        "reconstructor": profile.reconstructor, "batch_size": profile.batch_size, "seed": config.seed,
        "shift_loss_weight": settings.shift_loss_weight,
    }
    if profile.batch_size // world < 2:
        raise ConfigError(f"`batch_size` {profile.batch_size} leaves {profile.batch_size // world} sample per process; "
                        "R's batch norm needs at least 2")
    if profile.reconstructor == "lenet5" and game_generator.resolution < 32:
        raise ConfigError(f"`reconstructor` lenet5 needs images of 32 px or more, the game renders "
                        f"{game_generator.resolution} px")
    rng = torch.Generator().manual_seed(config.seed)
    deformator = build_deformator(profile.deformator, generator.latent_dim, profile.num_directions, rng)
    torch.manual_seed(config.seed)  # R's initial weights: the same seed, the same run
    reconstructor = build_reconstructor(profile.reconstructor, profile.num_directions, generator.channels)
    # The same computation, cheaper (directions/prepared_models.py): folded batch norms, channels-last.
    same = game_generator is generator
    game_generator = prepare_frozen_generator(game_generator)
    generator = game_generator if same else prepare_frozen_generator(generator)
    prepare_reconstructor(reconstructor)
    if config.compile:
        game_generator.synthesize = torch.compile(game_generator.synthesize)
        reconstructor.forward = torch.compile(reconstructor.forward)
    return Game(generator, game_generator, deformator, reconstructor, profile, settings, recorded, train_options,
                identity)


@dataclass
class Measured:
    """What the finished directions are measured to do, before h_bg is chosen among them."""
    directions: torch.Tensor
    rca: float
    effects: dict | None
    charts: dict


@dataclass
class BackgroundChoice:
    """h_bg, stage 1's main output, with its scores and (where the generator knows its
    backgrounds) how it does against the truth; all None where h_bg was not searched."""
    summary: dict | None = None
    vector: torch.Tensor | None = None
    ground_truth: dict | None = None


def _measure_directions(config: DiscoverConfig, out: Path, game: Game) -> Measured:
    """The final RCA, the image-space effects and one chart per direction, each with its own
    bar: minutes each on a large generator."""
    game.deformator.eval()
    directions = game.deformator.directions().detach()
    with progress_bar(rca_batches(config.rca_samples), "final RCA", enabled=config.progress, leave=False,
                      unit="batch") as bar:
        rca = reconstructor_accuracy(game.game_generator, game.deformator, game.reconstructor, game.settings,
                                     samples=config.rca_samples, progress=bar)
    effects = None
    if config.effects:
        with progress_bar(directions.shape[1], "effects", enabled=config.progress, leave=False,
                          unit="direction") as bar:
            effects = direction_effects(game.generator, directions, shift=game.settings.shift_scale, progress=bar)
    charts = {}
    if config.charts:
        charts = save_direction_charts(game.generator, directions, out / "charts", progress=config.progress)
        # recorded relative to the run folder (charts/direction_000.png), so the folder can move
        charts = {**charts, "directions": [record_path(path, out) for path in charts["directions"]],
                  "overview": record_path(charts["overview"], out)}
    return Measured(directions, rca, effects, charts)


def _choose_h_bg(config: DiscoverConfig, out: Path, game: Game, directions: torch.Tensor) -> BackgroundChoice:
    """h_bg by the search (or as ``bg_direction`` names it), where the profile or the user asks."""
    bg_search = game.profile.bg_search if config.bg_search is None else config.bg_search
    if not (bg_search or config.bg_direction is not None):
        return BackgroundChoice()
    criterion = bg.BackgroundCriterion()
    summary, h_bg, held = choose_background(game.generator, directions, config, out, criterion)
    report = None
    if has_ground_truth(game.generator):
        report = {"background": background_report(game.generator, h_bg, summary["magnitude"], held["z"],
                                                  held["classes"], criterion),
                  "factors": factor_table(game.generator, directions)}
    return BackgroundChoice(summary, h_bg, report)


def _write_run(config: DiscoverConfig, out: Path, game: Game, history: dict, started: float, measured: Measured,
               choice: BackgroundChoice) -> dict:
    """The tensors, the report and, last, the summary that marks the run finished."""
    generator, profile, settings = game.generator, game.profile, game.settings
    tensors = {"directions": measured.directions}
    if choice.vector is not None:
        tensors["bg_direction"] = choice.vector
    write_safetensors(out / TENSORS_NAME, tensors,
                      {"generator": config.generator,
                       **({"bg_magnitude": float(choice.summary["magnitude"])} if choice.summary else {})})
    summary = {
        "generator": config.generator,
        "generator_options": game.options,
        "latent_dim": generator.latent_dim,
        "num_directions": profile.num_directions,
        "deformator": profile.deformator,
        "reconstructor": profile.reconstructor,
        "batch_size": profile.batch_size,
        "lr": profile.lr,
        "shift_loss_weight": settings.shift_loss_weight,
        "train_options": game.train_options,
        "steps": history["steps"],
        "train_seconds": history["seconds"],  # every process's steps together
        "resumed_from": history["resumed_from"],  # the step this command started at
        "batch_norm": history["batch_norm"],
        "rca": round(measured.rca, 4),
        "rca_samples": config.rca_samples,
        "rca_curve": history["rca_curve"],
        "stopped_early": history["stopped_early"],
        "effects": measured.effects,
        "bg_direction": choice.summary,
        "ground_truth": choice.ground_truth,
        "charts": measured.charts,
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(generator.device),
        "precision": settings.precision,  # this process's; "spans" holds every resume's
        "spans": history["spans"],
    }
    write_report(out / "report.md", summary)
    write_json(out / SUMMARY_NAME, summary)
    return summary
