"""Stage 1 parts: deformators, reconstructors, the training loop, h_bg choice, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from directions import background as bg
from directions.deformators import build_deformator
from directions.discovery import TrainSettings, reconstructor_accuracy, sample_shifts, train
from directions.generators import ScenesGenerator
from directions.reconstructors import build_reconstructor
from saliency.checkpoint import load_checkpoint, save_checkpoint
from saliency.errors import UserError
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


@pytest.mark.parametrize("name", ["lenet", "resnet18"])
def test_reconstructors_take_a_pair_and_give_logits_and_shift(name):
    reconstructor = build_reconstructor(name, 9)
    a, b = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    logits, shift = reconstructor(a, b)
    assert logits.shape == (3, 9) and shift.shape == (3,)
    if name == "resnet18":
        assert reconstructor.features.conv1.in_channels == 6


# ------------------------------------------------------------------------------ training
def _tiny(tmp_path, steps=60, seed=0, deformator="ortho", resume=False, checkpoint_every=20, lr=2e-3):
    generator = ScenesGenerator(resolution=32).eval().requires_grad_(False)
    a = build_deformator(deformator, generator.latent_dim, 6, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # R's initial weights
    r = build_reconstructor("lenet", 6)
    settings = TrainSettings(steps=steps, batch_size=16, lr=lr, seed=seed, log_every=10,
                             checkpoint_every=checkpoint_every)
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


def test_generator_gets_no_gradient_and_frozen_deformator_stays(tmp_path):
    generator, a, r, settings, _ = _tiny(tmp_path, steps=5, deformator="random")
    assert all(p.grad is None for p in generator.parameters())
    fresh = build_deformator("random", generator.latent_dim, 6, torch.Generator().manual_seed(0))
    assert torch.equal(a.directions(), fresh.directions())


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    _, a_full, r_full, _, _ = _tiny(tmp_path / "full", steps=40)
    _tiny(tmp_path / "split", steps=20)
    with pytest.raises(UserError, match="--resume"):
        _tiny(tmp_path / "split", steps=40)
    _, a_split, r_split, _, _ = _tiny(tmp_path / "split", steps=40, resume=True)
    assert torch.equal(a_full.directions(), a_split.directions())
    for p, q in zip(r_full.parameters(), r_split.parameters()):
        assert torch.equal(p, q)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(10, 41, 10))


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


def test_checkpoints_of_the_earlier_two_key_layout_still_load(tmp_path):
    from safetensors.torch import save_file

    from saliency.checkpoint import FORMAT, _split

    tensors: dict = {}
    structure = _split({"step": 3, "weights": torch.ones(2)}, "", tensors)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": FORMAT, "state": json.dumps(structure)})
    state = load_checkpoint(tmp_path / "old.safetensors")
    assert state["step"] == 3 and torch.equal(state["weights"], torch.ones(2))
