"""The embedded `scenes` generator: determinism, ground truth, whiteness, mixing, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from directions.generators.scenes import FACTOR_INDEX, FACTORS, SHAPES, ScenesGenerator

WHITE = FACTOR_INDEX["whiteness"]


def _batch(gen, n, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return gen.sample_latents(n, rng), gen.sample_classes(n, rng)


def test_same_seed_same_images_and_fresh_instances_agree(scenes64):
    z, c = _batch(scenes64, 16, seed=3)
    z2, c2 = _batch(scenes64, 16, seed=3)
    assert torch.equal(z, z2) and torch.equal(c, c2)
    other = ScenesGenerator(resolution=64)  # the mixing map is rebuilt from its seed
    assert torch.equal(scenes64(z, c), other(z, c))
    z3, c3 = _batch(scenes64, 16, seed=4)
    assert not torch.allclose(scenes64(z, c), scenes64(z3, c3))
    assert not torch.allclose(ScenesGenerator(resolution=64, seed=1)(z, c), scenes64(z, c))


def test_images_are_rgb_in_unit_range_at_any_resolution():
    for res in (32, 64, 128, 96):
        gen = ScenesGenerator(resolution=res)
        z, c = _batch(gen, 8)
        x = gen(z, c)
        assert x.shape == (8, 3, res, res)
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def test_all_ten_shape_families_render_distinct_masks(scenes64):
    assert len(SHAPES) >= 8
    z, _ = _batch(scenes64, 1)
    masks = scenes64.object_mask(z.expand(len(SHAPES), -1), torch.arange(len(SHAPES)))
    areas = masks.float().mean(dim=(1, 2, 3))
    assert (areas > 0.02).all(), areas
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    union = flat.sum(1, keepdim=True) + flat.sum(1) - inter
    iou = inter / union
    off_diagonal = iou[~torch.eye(len(SHAPES), dtype=torch.bool)]
    assert off_diagonal.max() < 0.9, "two shape families render the same silhouette"


def _with_factor(values, index, value):
    changed = values.clone()
    changed[:, index] = value
    return changed


def test_whiteness_at_maximum_whitens_background_and_keeps_object(scenes128):
    gen = scenes128
    z, c = _batch(gen, 64, seed=1)
    values = gen.factor_values(z)
    before, coverage = gen.render(values, c)
    after, coverage_after = gen.render(_with_factor(values, WHITE, 1.0), c)
    assert torch.equal(coverage, coverage_after)

    background = (coverage <= 0.01).expand_as(after)
    assert after[background].min() >= 0.97
    interior = (coverage >= 0.99).expand_as(after)
    assert (after - before)[interior].abs().max() <= 0.02
    # Only a thin anti-aliased rim is neither: it hugs the mask's edge (the exceptions are
    # slivers thinner than a pixel, such as a crescent's tips, which no mask pixel covers).
    rim = ((coverage > 0.01) & (coverage < 0.99)).float()
    mask = (coverage >= 0.5).float()
    edge = F.max_pool2d(mask, 5, 1, 2) - (-F.max_pool2d(-mask, 5, 1, 2))
    assert (rim * (1 - edge)).sum() <= 0.005 * rim.sum()
    # And at its usual value the background is not white.
    assert (before[background] < 0.95).float().mean() > 0.95


def test_true_mask_matches_rendered_object(scenes128):
    """Estimate each pixel's object coverage from two renders that differ only in the
    background (plain vs. whitened) and compare with the reported exact mask."""
    gen = scenes128
    z, c = _batch(gen, 32, seed=2)
    values = gen.factor_values(z)
    plain, _ = gen.render(values, c)
    white, _ = gen.render(_with_factor(values, WHITE, 1.0), c)
    # The object leaves the frame: the background alone.
    background, _ = gen.render(_with_factor(values, FACTOR_INDEX["pos_x"], 10.0), c)
    # image = a * obj + (1 - a) * bg  =>  plain - white = (1 - a) * (bg - 1)
    estimated_coverage = 1 - (plain - white).mean(1) / (background.mean(1) - 1)
    estimated = estimated_coverage >= 0.5
    truth = gen.object_mask(z, c)[:, 0]
    for est, true in zip(estimated, truth):
        iou = (est & true).sum() / (est | true).sum()
        assert iou >= 0.98, float(iou)


def test_objects_are_rarely_near_white(scenes64):
    z, c = _batch(scenes64, 512, seed=5)
    values = scenes64.factor_values(z)
    image, coverage = scenes64.render(values, c)
    interior = coverage[:, 0] >= 0.99
    brightness = image.mean(1)[interior]
    assert (brightness >= 0.95).float().mean() < 0.001


def test_mask_area_is_in_the_range_of_saliency_benchmarks(scenes64):
    z, c = _batch(scenes64, 512, seed=6)
    area = scenes64.object_mask(z, c).float().mean(dim=(1, 2, 3))
    assert 0.12 < float(area.mean()) < 0.35  # ECSSD's mean foreground fraction is 0.235
    assert float(((area >= 0.05) & (area <= 0.5)).float().mean()) > 0.8


def test_whiteness_is_usually_off(scenes64):
    z, _ = _batch(scenes64, 2048, seed=7)
    whiteness = scenes64.factor_values(z)[:, WHITE]
    assert 0.005 < float((whiteness > 0.5).float().mean()) < 0.1


def test_mixing_is_real_no_coordinate_drives_one_factor(scenes64):
    z, _ = _batch(scenes64, 256, seed=8)
    jac = scenes64.factor_jacobian(z).mean(0)  # (factors, latent)
    share = jac**2 / (jac**2).sum(0, keepdim=True)
    # Each latent coordinate spreads over many factors, none takes half of its effect ...
    assert share.max() < 0.5
    assert ((jac.abs() >= 0.1 * jac.abs().max(0).values).sum(0) >= 3).all()
    # ... and no factor is aligned with a coordinate.
    row_share = jac**2 / (jac**2).sum(1, keepdim=True)
    assert row_share.max() < 0.5
    # A random direction moves several factors at once.
    h = torch.nn.functional.normalize(torch.randn(scenes64.latent_dim, generator=torch.Generator().manual_seed(0)), dim=0)
    delta = scenes64.pre_activations(z + 2 * h) - scenes64.pre_activations(z)
    assert (delta.abs().mean(0) > 0.2).sum() >= 5


def test_mixing_is_nonlinear(scenes64):
    z, _ = _batch(scenes64, 64, seed=9)
    jac = scenes64.factor_jacobian(z)
    spread = (jac - jac.mean(0)).norm(dim=(1, 2)).mean()
    assert spread > 0.05  # the gradient changes with z


def test_factor_jacobian_matches_autograd(scenes64):
    z, _ = _batch(scenes64, 3, seed=10)
    analytic = scenes64.factor_jacobian(z)
    for i in range(3):
        numeric = torch.autograd.functional.jacobian(lambda v: scenes64.pre_activations(v[None])[0], z[i])
        assert torch.allclose(analytic[i], numeric, atol=1e-5)


def test_factor_directions_are_unit_and_move_their_factor(scenes64):
    directions = scenes64.factor_directions(n=1024)
    assert torch.allclose(directions.norm(dim=1), torch.ones(len(FACTORS)), atol=1e-5)
    z, c = _batch(scenes64, 256, seed=11)
    shifted = scenes64.pre_activations(z + 3 * directions[WHITE]) - scenes64.pre_activations(z)
    moved = shifted.abs().mean(0)
    assert moved.argmax() == WHITE
    assert moved[WHITE] > 2.5
    # Shifting far along it whitens the background and leaves the object.
    far = scenes64.factor_values(z + 8 * directions[WHITE])[:, WHITE]
    assert (far > 0.98).float().mean() > 0.95


def test_gradients_flow_to_every_latent_coordinate_for_every_class(scenes64):
    z, _ = _batch(scenes64, len(SHAPES), seed=12)
    z = z.clone().requires_grad_(True)
    image = scenes64(z, torch.arange(len(SHAPES)))
    (image * torch.linspace(0, 1, image.numel()).view_as(image)).sum().backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad.abs() > 0).all()
    # A centred object puts a pixel centre on the shape's origin: still finite.
    values = scenes64.factor_values(z.detach()).requires_grad_(True)
    with torch.no_grad():
        values[:, FACTOR_INDEX["pos_x"]] = 1.0 / 64
        values[:, FACTOR_INDEX["pos_y"]] = 1.0 / 64
    scenes64.render(values, torch.arange(len(SHAPES)))[0].sum().backward()
    assert torch.isfinite(values.grad).all()


def test_class_checks(scenes64):
    z, _ = _batch(scenes64, 4)
    import pytest

    with pytest.raises(ValueError):
        scenes64(z, None)
    with pytest.raises(ValueError):
        scenes64(z, torch.tensor([0, 1, 2, len(SHAPES)]))
    with pytest.raises(ValueError):
        scenes64(z[:, :5], torch.zeros(4, dtype=torch.long))
    one_class = scenes64(z, 3)
    assert torch.equal(one_class, scenes64(z, torch.full((4,), 3)))
    chosen = scenes64.sample_classes(100, torch.Generator().manual_seed(0), choices=[2, 5])
    assert set(chosen.tolist()) == {2, 5}


def test_shifting_along_the_whiteness_direction_changes_nothing_else(scenes64):
    z, c = _batch(scenes64, 128, seed=13)
    direction = scenes64.factor_directions(n=256)[WHITE]
    before = scenes64.factor_values(z)
    after = scenes64.factor_values(z + 12 * direction)
    others = torch.ones(len(FACTORS), dtype=torch.bool)
    others[WHITE] = False
    assert torch.allclose(before[:, others], after[:, others], atol=1e-5)
    assert (after[:, WHITE] > 0.99).all()
