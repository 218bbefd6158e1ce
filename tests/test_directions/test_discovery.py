"""Stage 1 parts: deformators, reconstructors, the training loop, h_bg choice, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from directions import background as bg
from directions.deformators import build_deformator
from directions.discovery import (TrainSettings, plateaued, reconstructor_accuracy, sample_shifts,
                                  stream_device, train)
from directions.generators import Generator, ScenesGenerator
from directions.reconstructors import build_reconstructor
from directions.run_folder import describe_spans, report_markdown
from saliency.core.checkpoint import load_checkpoint, save_checkpoint
from saliency.core.errors import UserError
from toy_generators import PlantedBackground


# ------------------------------------------------------------------------------ deformators
@pytest.mark.parametrize("name", ["ortho", "unit", "random", "identity"])
def test_deformators_keep_their_constraint_through_training(name):
    d, k = 12, 7
    deformator = build_deformator(name, d, k, torch.Generator().manual_seed(0))
    if deformator.trainable:
        optimizer = torch.optim.Adam(deformator.parameters(), lr=0.1)
        target = torch.randn(d, k, generator=torch.Generator().manual_seed(1))
        for _ in range(20):  # push A somewhere else entirely
            optimizer.zero_grad()
            (deformator.directions() - target).pow(2).sum().backward()
            optimizer.step()
    a = deformator.directions().detach()
    assert a.shape == (d, k)
    assert torch.allclose(a.norm(dim=0), torch.ones(k), atol=1e-5)
    if name in ("ortho", "random", "identity"):
        assert torch.allclose(a.T @ a, torch.eye(k), atol=1e-5)
    if name == "identity":
        assert torch.equal(a, torch.eye(d)[:, :k])
    shifts = deformator(torch.tensor([0, 3]), torch.tensor([2.0, -1.0]))
    assert torch.allclose(shifts, torch.stack([2 * a[:, 0], -a[:, 3]]), atol=1e-6)


def test_frozen_baselines_have_nothing_to_train():
    for name in ("random", "identity"):
        deformator = build_deformator(name, 8, 4)
        assert not deformator.trainable and not list(deformator.parameters())


def test_too_many_orthonormal_directions_is_a_user_error():
    for name in ("ortho", "random", "identity"):
        with pytest.raises(UserError, match="at most d = 8"):
            build_deformator(name, 8, 9)
    assert build_deformator("unit", 8, 9).directions().shape == (8, 9)
    with pytest.raises(UserError, match="unknown deformator"):
        build_deformator("spiral", 8, 2)


def test_shifts_follow_the_paper():
    index, eps = sample_shifts(20000, 5, torch.Generator().manual_seed(0), 6.0, 0.5)
    assert set(index.tolist()) == set(range(5))
    assert eps.abs().min() >= 0.5 and eps.abs().max() <= 6.0
    assert abs(float((eps > 0).float().mean()) - 0.5) < 0.02
    # |eps| < 0.5 snapped up: about 1/12 of the mass sits exactly at +-0.5
    assert abs(float((eps.abs() == 0.5).float().mean()) - 1 / 12) < 0.01


@pytest.mark.parametrize("name", ["lenet", "lenet5", "resnet18"])
@pytest.mark.parametrize("channels", [3, 1])
def test_reconstructors_take_a_pair_and_give_logits_and_shift(name, channels):
    reconstructor = build_reconstructor(name, 9, channels)
    a, b = torch.rand(3, channels, 32, 32), torch.rand(3, channels, 32, 32)
    logits, shift = reconstructor(a, b)
    assert logits.shape == (3, 9) and shift.shape == (3,)
    first = next(m for m in reconstructor.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2 * channels  # the pair, concatenated on channels


# ------------------------------------------------------------------------------ training
def _tiny(tmp_path, steps=60, seed=0, deformator="ortho", resume=False, checkpoint_every=20, lr=2e-3, **extra):
    generator = ScenesGenerator(resolution=32).eval().requires_grad_(False)
    a = build_deformator(deformator, generator.latent_dim, 6, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # R's initial weights
    r = build_reconstructor("lenet", 6)
    settings = TrainSettings(steps=steps, batch_size=16, lr=lr, seed=seed, log_every=10,
                             checkpoint_every=checkpoint_every, **extra)
    identity = {"generator": "scenes", "deformator": deformator, "num_directions": 6}
    history = train(generator, a, r, settings, tmp_path, identity, resume=resume, progress=False)
    return generator, a, r, settings, history


def test_loss_falls_on_a_tiny_run(tmp_path):
    generator, a, r, settings, history = _tiny(tmp_path, steps=150)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(10, 151, 10))
    first = sum(e["loss"] for e in log[:3]) / 3
    last = sum(e["loss"] for e in log[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    assert reconstructor_accuracy(generator, a, r, settings, samples=256) > 1 / 6 + 0.1  # above chance


def test_a_frozen_deformator_stays_as_it_was(tmp_path):
    # (that no generator weight gets a gradient is shown below, on generators that have weights:
    # scenes has none)
    generator, a, r, settings, _ = _tiny(tmp_path, steps=5, deformator="random")
    fresh = build_deformator("random", generator.latent_dim, 6, torch.Generator().manual_seed(0))
    assert torch.equal(a.directions(), fresh.directions())


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    _, a_full, r_full, _, _ = _tiny(tmp_path / "full", steps=40)
    _tiny(tmp_path / "split", steps=20)
    with pytest.raises(UserError, match="pass resume to continue"):
        _tiny(tmp_path / "split", steps=40)
    _, a_split, r_split, _, _ = _tiny(tmp_path / "split", steps=40, resume=True)
    assert torch.equal(a_full.directions(), a_split.directions())
    for p, q in zip(r_full.parameters(), r_split.parameters()):
        assert torch.equal(p, q)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(10, 41, 10))


def test_spans_record_where_and_how_each_stretch_was_played(tmp_path):
    """A resume in place adds no span (the checkpoint stays an uninterrupted run's); a resume at another precision opens one, and the report names both stretches."""
    *_, history = _tiny(tmp_path / "full", steps=40)
    _tiny(tmp_path / "split", steps=20)
    *_, split = _tiny(tmp_path / "split", steps=40, resume=True)
    fp32_span = {"from_step": 0, "device": "cpu", "precision": "fp32"}
    assert history["spans"] == split["spans"] == [fp32_span]
    assert (history["resumed_from"], split["resumed_from"]) == (0, 20)
    full, resumed = (load_checkpoint(tmp_path / run / "checkpoint.safetensors") for run in ("full", "split"))
    assert full["spans"] == resumed["spans"] == [fp32_span]

    *_, mixed = _tiny(tmp_path / "split", steps=42, resume=True, precision="bf16")
    assert mixed["spans"] == [fp32_span, {"from_step": 40, "device": "cpu", "precision": "bf16"}]
    assert load_checkpoint(tmp_path / "split" / "checkpoint.safetensors")["spans"] == mixed["spans"]
    summary = {"generator": "scenes", "num_directions": 6, "deformator": "ortho", "reconstructor": "lenet",
               "batch_size": 16, "steps": 42, "train_seconds": 1.0, "seconds": 2.0, "device": "cpu",
               "precision": "bf16", "rca_samples": 64, "rca": 0.5, "bg_direction": None, "spans": mixed["spans"]}
    assert "- played: cpu fp32 for steps 0-40; cpu bf16 for steps 40-42" in report_markdown(summary)
    assert "played" not in report_markdown(summary | {"spans": [fp32_span]})
    # A resumed run's training time counts every process; its command's time only its own stretch.
    assert "(1 s training, 2 s in all, cpu, bf16)" in report_markdown(summary)
    resumed = report_markdown(summary | {"train_seconds": 900.0, "resumed_from": 40})
    assert "(900 s training in all; this command, resumed at step 40, 2 s, cpu, bf16)" in resumed


def test_a_checkpoint_from_before_spans_leaves_its_steps_unrecorded(tmp_path):
    _tiny(tmp_path, steps=20)
    checkpoint = tmp_path / "checkpoint.safetensors"
    old = {key: value for key, value in load_checkpoint(checkpoint).items() if key != "spans"}
    save_checkpoint(checkpoint, old)
    *_, history = _tiny(tmp_path, steps=30, resume=True)
    assert history["spans"] == [{"from_step": 0, "device": None, "precision": None},
                                {"from_step": 20, "device": "cpu", "precision": "fp32"}]
    assert describe_spans(history["spans"], 30) == "unrecorded for steps 0-20; cpu fp32 for steps 20-30"


def test_a_run_continued_on_a_gpu_keeps_the_cpu_sample_stream(tmp_path):
    """A CPU run resumed with --device cuda draws the samples the CPU would have drawn next
    (the paper-budget runs move between machines); a fresh GPU run draws on the GPU."""
    _tiny(tmp_path / "run", steps=10)
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert stream_device(cuda, checkpoint) == cpu  # the checkpoint holds a CPU stream
    assert stream_device(cuda, None) == cuda
    assert stream_device(cuda, tmp_path / "none.safetensors") == cuda
    assert stream_device(cpu, checkpoint) == cpu
    state = load_checkpoint(checkpoint)
    save_checkpoint(checkpoint, state | {"rng": torch.zeros(16, dtype=torch.uint8)})  # a GPU's Philox state
    assert stream_device(cuda, checkpoint) == cuda


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_rca_curve_is_recorded_without_changing_the_run(tmp_path):
    generator, a_plain, r_plain, settings, _ = _tiny(tmp_path / "plain", steps=30)
    _, a_curve, r_curve, _, history = _tiny(tmp_path / "curve", steps=30, rca_every=10, rca_samples=64)
    # Measuring the RCA re-estimates R's batch norms; the run must go on as if it had not.
    assert torch.equal(a_plain.directions(), a_curve.directions())
    for (name, p), q in zip(r_plain.state_dict().items(), r_curve.state_dict().values()):
        assert torch.equal(p, q), name
    records = [entry for entry in _log(tmp_path / "curve") if "rca" in entry]
    assert [entry["step"] for entry in records] == [10, 20, 30]
    assert all(entry["rca_samples"] == 64 for entry in records)
    assert history["rca_curve"] == [[entry["step"], entry["rca"]] for entry in records]
    # The last point is the RCA of the finished run, measured the same way.
    final = reconstructor_accuracy(generator, a_plain, r_plain, settings, samples=64)
    assert records[-1]["rca"] == round(final, 4)
    assert records[-1]["rca"] > records[0]["rca"] or records[-1]["rca"] > 1 / 6  # it learned something
    assert all(entry["step"] % 10 == 0 for entry in _log(tmp_path / "plain"))
    assert not any("rca" in entry for entry in _log(tmp_path / "plain"))


def test_plateau_rule_needs_a_whole_window_of_flat_rca():
    assert not plateaued([[5, 0.3], [10, 0.3]], window=10, change=0.01)  # no record 10 steps back
    assert plateaued([[0, 0.300], [5, 0.305], [10, 0.309]], window=10, change=0.01)
    assert not plateaued([[0, 0.300], [5, 0.305], [10, 0.311]], window=10, change=0.01)
    assert not plateaued([[0, 0.2], [5, 0.3], [10, 0.3], [15, 0.3]], window=10, change=0.0)  # rule off
    # Only the last window counts: an early rise does not hold a later plateau back.
    assert plateaued([[0, 0.1], [5, 0.3], [10, 0.3], [15, 0.301]], window=10, change=0.01)


def test_a_run_stops_early_on_the_plateau_and_stays_stopped_on_resume(tmp_path):
    flat = {"rca_every": 10, "rca_samples": 32, "plateau_change": 1.01, "plateau_window": 20}  # always flat
    _, _, _, _, history = _tiny(tmp_path, steps=60, **flat)
    assert history["steps"] == 30  # records at 10 and 30 span the window
    assert history["stopped_early"]["step"] == 30
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["step"] == 30
    _, _, _, _, again = _tiny(tmp_path, steps=60, resume=True, **flat)
    assert again["steps"] == 30 and again["stopped_early"]["step"] == 30
    # Resumed without the rule, it goes on to --steps and keeps the curve it had.
    _, _, _, _, longer = _tiny(tmp_path, steps=50, resume=True, rca_every=10, rca_samples=32)
    assert longer["steps"] == 50 and longer["stopped_early"] is None
    assert [step for step, _ in longer["rca_curve"]] == [10, 20, 30, 40, 50]
    assert [entry["step"] for entry in _log(tmp_path) if "rca" in entry] == [10, 20, 30, 40, 50]


def test_plateau_rule_without_a_curve_is_refused():
    with pytest.raises(UserError, match="plateau_change needs rca_every"):
        TrainSettings(plateau_change=0.01).validate()
    with pytest.raises(UserError, match="plateau_window of at least one rca_every"):
        TrainSettings(plateau_change=0.01, rca_every=100, plateau_window=50).validate()


def test_resume_takes_the_new_learning_rate(tmp_path):
    _tiny(tmp_path, steps=10, checkpoint_every=10)
    _tiny(tmp_path, steps=20, checkpoint_every=10, resume=True, lr=1e-5)
    state = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert state["step"] == 20
    for optimizer in state["optimizers"].values():
        assert [group["lr"] for group in optimizer["param_groups"]] == [1e-5]


def test_resume_with_other_settings_is_refused(tmp_path):
    _tiny(tmp_path, steps=10, checkpoint_every=10)
    with pytest.raises(UserError, match="other settings.*deformator"):
        _tiny(tmp_path, steps=20, deformator="unit", resume=True)


def test_checkpoint_round_trip_and_damage(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    rng = torch.Generator().manual_seed(5)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.get_state(),
             "step": 7, "pair": (1, "a"), "nothing": None}
    path = save_checkpoint(tmp_path / "c.safetensors", state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["pair"] == (1, "a") and loaded["nothing"] is None
    assert torch.equal(loaded["rng"], rng.get_state())
    restored = torch.optim.Adam(model.parameters())
    restored.load_state_dict(loaded["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    data = path.read_bytes()
    (tmp_path / "torn.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load_checkpoint(tmp_path / "torn.safetensors")
    (tmp_path / "noise.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "noise.safetensors")


# ------------------------------------------------------------------------------ h_bg
@pytest.fixture(scope="module")
def planted():
    return PlantedBackground().eval().requires_grad_(False)


def test_search_finds_the_planted_background_direction(planted):
    gen = planted
    rng = torch.Generator().manual_seed(0)
    others = torch.nn.functional.normalize(torch.randn(8, 4, generator=rng), dim=0)
    # candidates: random directions, the washout (whitens everything), the planted one (negated)
    directions = torch.cat([others[:, :2], gen.washout_direction[:, None], -gen.white_direction[:, None],
                            others[:, 2:]], 1)
    z, c = bg.evaluation_batch(gen, 64, seed=1)
    ranked = bg.rank_directions(gen, directions, z, c, bg.BackgroundCriterion())
    assert ranked[0].index == 3 and ranked[0].sign == -1
    assert 0.05 <= ranked[0].kept_area <= 0.5 and ranked[0].change < 0.01
    washout = next(c for c in ranked if c.index == 2)
    assert washout.score < ranked[0].score


def test_a_naive_whiteness_score_would_pick_the_washout(planted):
    """Why the penalty and the area bounds exist: by whitened fraction alone, the washout wins."""
    gen = planted
    z, c = bg.evaluation_batch(gen, 64, seed=1)
    naive = bg.BackgroundCriterion(min_area=0.0, max_area=1.0, change_penalty=0.0)
    scored = {name: max(bg.score_direction(gen, d, bg.DEFAULT_MAGNITUDES, z, c, naive), key=lambda s: s[2]["score"])
              for name, d in (("white", gen.white_direction), ("washout", gen.washout_direction))}
    assert scored["washout"][2]["turned"] > scored["white"][2]["turned"]


def test_refinement_moves_a_rough_start_onto_the_planted_direction(planted):
    gen = planted
    rng = torch.Generator().manual_seed(2)
    noise = torch.randn(8, generator=rng)
    noise = noise - torch.dot(noise, gen.white_direction) * gen.white_direction
    start = torch.nn.functional.normalize(gen.white_direction + 1.0 * noise / noise.norm(), dim=0)
    assert torch.dot(start, gen.white_direction) < 0.75
    refined = bg.refine_direction(gen, start, magnitude=6.0, criterion=bg.BackgroundCriterion(), steps=150, lr=0.05)
    assert torch.dot(refined, gen.white_direction) > 0.9


def test_a_checkpoint_without_the_one_key_layout_is_refused(tmp_path):
    from safetensors.torch import save_file

    from saliency.core.checkpoint import FORMAT, _split

    tensors: dict = {}
    structure = _split({"step": 3, "weights": torch.ones(2)}, "", tensors)
    save_file(tensors, str(tmp_path / "two-key.safetensors"),
              metadata={"format": FORMAT, "state": json.dumps(structure)})
    with pytest.raises(UserError, match="not a saliency checkpoint"):
        load_checkpoint(tmp_path / "two-key.safetensors")


# ------------------------------------------------------- frozen generators that have weights
def _weighted_generator(name, tmp_path):
    from directions.generators import build_generator

    if name == "dcgan-faces":
        pytest.importorskip("gan_face_generate")
        return build_generator("dcgan-faces", device="cpu")
    if name == "sngan-mnist":
        return build_generator("sngan-mnist", device="cpu")
    from published_layouts import save_random_biggan

    folder = save_random_biggan(tmp_path / "biggan", config={"channel_width": 8, "num_classes": 20})
    return build_generator("biggan-deep-128", device="cpu", weights=str(folder))


@pytest.mark.parametrize("prepared", [False, True], ids=["as-built", "folded"])
@pytest.mark.parametrize("name", ["dcgan-faces", "biggan-deep-128", "sngan-mnist"])
def test_no_generator_weight_gets_a_gradient_or_changes(tmp_path, name, prepared):
    """The game trains A and R through G, never G itself: no weight gets a gradient, and no
    weight or batch-norm statistic changes (as built, G still has its batch norms; folded, as
    discover runs it, they are in the convolutions)."""
    from directions.discovery import game_optimizers, play_step
    from directions.prepared_models import prepare_frozen_generator, prepare_reconstructor

    generator = _weighted_generator(name, tmp_path)
    if prepared:
        generator = prepare_frozen_generator(generator)
    assert sum(p.numel() for p in generator.parameters()) > 10_000  # a generator with weights
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    assert prepared or any("running_" in k for k in before)  # batch-norm statistics to keep
    deformator = build_deformator("ortho", generator.latent_dim, 4, torch.Generator().manual_seed(0))
    reconstructor = prepare_reconstructor(build_reconstructor("lenet", 4, generator.channels))
    a_before = deformator.directions().detach().clone()
    r_before = [p.detach().clone() for p in reconstructor.parameters()]
    settings = TrainSettings(batch_size=4, lr=1e-2)
    optimizers = game_optimizers(deformator, reconstructor, settings)
    rng = torch.Generator().manual_seed(0)
    for _ in range(2):
        play_step(generator, deformator, reconstructor, optimizers, rng, 4, settings)
    assert all(p.grad is None and not p.requires_grad for p in generator.parameters())
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a generator weight or statistic changed"
    assert not torch.equal(a_before, deformator.directions().detach())
    assert any(not torch.equal(b, p.detach()) for b, p in zip(r_before, reconstructor.parameters()))


def test_folding_batch_norms_keeps_the_generators_images(tmp_path):
    from directions.prepared_models import prepare_frozen_generator
    from saliency.core.fold import fold_batch_norms

    pytest.importorskip("gan_face_generate")
    plain = _weighted_generator("dcgan-faces", tmp_path)
    prepared = prepare_frozen_generator(plain)
    assert prepared is not plain  # a verified copy; the original is untouched
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules()) == 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == 4
    conv = next(m for m in prepared.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    z = plain.sample_latents(6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (plain(z) - prepared(z)).abs().max() < 1e-4
    with pytest.raises(ValueError, match="eval mode"):
        prepare_frozen_generator(plain.train())
    # grouped convolutions, both kinds, with and without a bias, against the unfolded pair
    for conv in (torch.nn.Conv2d(4, 6, 3, groups=2, bias=False), torch.nn.ConvTranspose2d(4, 6, 3, groups=2)):
        norm = torch.nn.BatchNorm2d(6)
        with torch.no_grad():
            norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
        pair = torch.nn.Sequential(conv, norm).eval()
        x = torch.randn(2, 4, 5, 5)
        expected = pair(x)
        assert fold_batch_norms(pair) == 1 and isinstance(pair[1], torch.nn.Identity)
        assert torch.allclose(pair(x), expected, atol=1e-5)


class _NeedsNCHW(Generator):
    """A generator whose code breaks on channels-last tensors (``.view`` of a conv output)."""

    latent_dim, resolution = 4, 8

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3))

    def synthesize(self, z, classes):
        x = self.body(z[:, :1, None, None].expand(-1, 1, 8, 8) + torch.zeros(1, 1, 8, 8, device=z.device))
        return torch.sigmoid(x.permute(0, 2, 3, 1).view(-1, 8, 8, 3).permute(0, 3, 1, 2))


def test_a_generator_that_needs_nchw_keeps_it_but_still_gets_its_norms_folded():
    from directions.prepared_models import prepare_frozen_generator

    generator = _NeedsNCHW().eval().requires_grad_(False)
    prepared = prepare_frozen_generator(generator)
    assert isinstance(prepared.body[1], torch.nn.Identity)  # folded, kept NCHW (the probe refused channels-last)
    assert prepared.body[0].weight.is_contiguous()
    z = generator.sample_latents(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(generator(z), prepared(z), atol=1e-5)


# ---------------------------------------------------------------- image-space effects (Table 5)
class _Linear(Generator):
    """G(z) = a fixed linear map of z onto 8x8 gray images, plus a saturating channel."""

    latent_dim, resolution, channels = 6, 8, 1

    def __init__(self):
        super().__init__()
        basis = torch.zeros(6, 64)
        for k in range(6):  # each latent coordinate lights its own pixels
            basis[k, k * 10: k * 10 + 10] = 1.0
        self.register_buffer("basis", basis)

    def synthesize(self, z, classes):
        # coordinate 5 saturates hard: far along it every image becomes the same
        gate = torch.sigmoid(-4 * z[:, 5:6])
        return ((z[:, :5] @ self.basis[:5]) * gate * 0.1 + 0.5).view(-1, 1, 8, 8).clamp(0, 1)


def test_effects_tell_distinct_directions_from_repeated_and_collapsing_ones():
    from directions.effects import direction_effects

    g = _Linear().eval()
    distinct = direction_effects(g, torch.eye(6)[:, :4], samples=16, shift=2.0)
    assert distinct["mean_abs_cos"] < 0.1 and distinct["collapsed_fraction"] == 0
    same = torch.eye(6)[:, [0, 0, 0, 0]] + 0.01 * torch.eye(6)[:, [1, 2, 3, 4]]
    repeated = direction_effects(g, same, samples=16, shift=2.0)
    assert repeated["mean_abs_cos"] > 0.9
    collapsing = direction_effects(g, torch.eye(6)[:, [5]], samples=16, shift=6.0)
    assert collapsing["diversity"] < 0.05 and collapsing["collapsed_fraction"] == 1
    assert distinct["still_fraction"] == 0 and distinct["change_min"] > 0.2


class _IgnoresLast(_Linear):
    """_Linear with a 7th latent coordinate the images do not depend on."""

    latent_dim = 7

    def synthesize(self, z, classes):
        return super().synthesize(z[:, :6], classes)


def test_effects_tell_directions_that_barely_move_the_image():
    from directions.effects import direction_effects

    g = _IgnoresLast().eval()
    directions = torch.eye(7)[:, [0, 1, 6, 6]]
    directions[:, 3] += 0.02 * torch.eye(7)[:, 2]  # almost still: a faint change along coordinate 2
    result = direction_effects(g, directions, samples=16, shift=2.0)
    assert result["still_fraction"] == 0.5 and result["change_min"] == 0.0
