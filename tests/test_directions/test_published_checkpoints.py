"""The published checkpoints drop in: each loader reads random weights written in the original
layout (tests/support/published_layouts.py), strictly, and renders finite images in [0, 1]; code in a
pickle is refused; a reference run imports as a discovery run that synthesis can use."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_line_error, run_cli
from directions.generators import build_generator
from published_layouts import (biggan_pytorch_state, proggan_state, sngan_generator_state, stylegan2_checkpoint,
                               write_reference_run, write_sngan_run_folder)
from saliency.core.errors import UserError


def _render(generator, n=2):
    z = generator.sample_latents(n, torch.Generator().manual_seed(0))
    classes = generator.sample_classes(n, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return generator(z, classes)


def _assert_images(images, shape):
    assert images.shape == shape
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 1e-3 and not torch.allclose(images[0], images[1])  # not blank, depends on z


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    files = {
        "sngan-mnist": write_sngan_run_folder(root / "SN_MNIST", (32, 32, 32, 32), 1, "sn_resnet32"),
        "sngan-anime": write_sngan_run_folder(root / "SN_Anime", (64, 32, 16, 8, 8), 3, "sn_resnet64"),
    }
    torch.save(proggan_state((32, 32, 16, 16, 8)), root / "proggan.pth")
    files["proggan-celebahq"] = root / "proggan.pth"
    torch.save(stylegan2_checkpoint((32, 32, 16, 16), style_dim=64), root / "stylegan2.pt")
    files["stylegan2"] = root / "stylegan2.pt"
    torch.save(biggan_pytorch_state(ch=4), root / "G_ema.pth")
    files["biggan-128"] = root / "G_ema.pth"
    return files


EXPECTED = {
    "sngan-mnist": (2, 1, 32, 32), "sngan-anime": (2, 3, 64, 64), "proggan-celebahq": (2, 3, 64, 64),
    "stylegan2": (2, 3, 32, 32), "biggan-128": (2, 3, 128, 128),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_published_layout_loads_strictly_and_renders(layouts, name):
    generator = build_generator(name, device="cpu", weights=str(layouts[name]))
    _assert_images(_render(generator), EXPECTED[name])
    assert all(not p.requires_grad for p in generator.parameters())


def test_the_latent_sizes_and_priors_are_the_published_ones(layouts):
    assert build_generator("sngan-anime", weights=str(layouts["sngan-anime"])).latent_dim == 128
    assert build_generator("proggan-celebahq", weights=str(layouts["proggan-celebahq"])).latent_dim == 512
    biggan = build_generator("biggan-128", weights=str(layouts["biggan-128"]))
    assert (biggan.latent_dim, biggan.num_classes, biggan.z_chunk) == (120, 1000, 20)
    truncated = build_generator("biggan-128", weights=str(layouts["biggan-128"]), truncation=0.5)
    z = truncated.sample_latents(2000, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    # StyleGAN2: latents live in W (the mapping of z ~ N(0, I)) unless asked for Z
    w_space = build_generator("stylegan2", weights=str(layouts["stylegan2"]))
    z_space = build_generator("stylegan2", weights=str(layouts["stylegan2"]), latent_space="z")
    rng = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    w = w_space.sample_latents(4, rng())
    z = z_space.sample_latents(4, rng())
    assert torch.allclose(w, w_space.style(z))
    with torch.no_grad():
        assert torch.allclose(w_space(w), z_space(z), atol=1e-5)


def test_sngan_loads_the_authors_file_alone_and_with_or_without_the_wrapper_prefix(layouts, tmp_path):
    state = torch.load(layouts["sngan-mnist"] / "generator.pt", weights_only=True)
    torch.save(state, tmp_path / "generator.pt")  # the file without its folder
    alone = build_generator("sngan-mnist", weights=str(tmp_path / "generator.pt"))
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    torch.save({k[len("model."):]: v for k, v in state.items()}, stripped / "generator.pt")
    bare = build_generator("sngan-mnist", weights=str(stripped))
    z = alone.sample_latents(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(alone(z), bare(z))


@pytest.mark.parametrize("damage, needle", [
    ("extra", "unexpected key model.2.extra.weight"),
    ("alias", "disagrees with the other name"),
    ("missing", "missing"),
])
def test_sngan_authors_layout_is_checked_key_by_key(tmp_path, damage, needle):
    state = sngan_generator_state((16, 16, 8, 8), 1)
    if damage == "extra":
        state["model.2.extra.weight"] = torch.zeros(1)
    elif damage == "alias":
        state["model.2.conv1.weight"] = state["model.2.conv1.weight"] + 1
    else:
        del state["model.3.model.4.running_var"]
    torch.save(state, tmp_path / "generator.pt")
    with pytest.raises(UserError, match=needle):
        build_generator("sngan-mnist", weights=str(tmp_path / "generator.pt"))


def test_args_json_that_contradicts_the_weights_is_refused(layouts, tmp_path):
    folder = write_sngan_run_folder(tmp_path / "run", (16, 16, 8, 8), 1, "sn_resnet32")
    (folder / "args.json").write_text(json.dumps({"latent_dim": 64, "image_channels": 1}))
    with pytest.raises(UserError, match="says latent_dim 64"):
        build_generator("sngan-mnist", weights=str(folder))
    with pytest.raises(UserError, match="sngan-anime"):
        build_generator("sngan-mnist", weights=str(layouts["sngan-anime"]))


@pytest.mark.parametrize("name, shrink", [
    ("proggan-celebahq", lambda s: {k: v for k, v in s.items() if k != "output.wscale.b"}),
    ("stylegan2", lambda s: {"g_ema": {**s["g_ema"], "convs.0.conv.weight": torch.zeros(1, 2, 3, 3, 3)}}),
    ("biggan-128", lambda s: {k: v for k, v in s.items() if not k.endswith("conv_sc.u0")}),
])
def test_a_file_that_does_not_fit_the_layout_is_one_clear_error(layouts, tmp_path, name, shrink):
    state = torch.load(layouts[name], weights_only=True)
    torch.save(shrink(state), tmp_path / "bad.pt")
    with pytest.raises(UserError, match=rf"{name}: .*bad\.pt"):
        build_generator(name, weights=str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("name", ["sngan-anime", "proggan-celebahq", "stylegan2", "biggan-128"])
def test_weights_are_required_where_none_ship(name):
    with pytest.raises(UserError, match="needs weights"):  # the argument's name (the CLI says --weights)
        build_generator(name)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["sngan-mnist", "proggan-celebahq", "stylegan2", "biggan-128"])
def test_a_pickle_that_would_run_code_is_refused_through_the_cli(tmp_path, name):
    marker = tmp_path / "pwned"
    torch.save({"model.0.weight": _Exploit(marker)}, tmp_path / "evil.pt")
    result = run_cli("sample", "--generator", name, "--weights", str(tmp_path / "evil.pt"), "--n", "1",
                     "--out", str(tmp_path / "x.png"), "--device", "cpu")
    assert_one_line_error(result, "could run code", "evil.pt")
    assert not marker.exists() and not (tmp_path / "x.png").exists()


# -------------------------------------------------------------------------------- import-run
def _imported(tmp_path, deformator, *args, latent=12, directions=12, annotation=None, bias=True):
    source = write_reference_run(tmp_path / f"ref-{deformator}", deformator, latent, directions,
                                 annotation=annotation, bias=bias)
    out = tmp_path / f"ours-{deformator}"
    result = run_cli("import-run", str(source), "--out", str(out), *args)
    return source, out, result


def test_import_run_ortho_gives_the_reference_matrix_and_the_chosen_h_bg(tmp_path):
    source, out, result = _imported(tmp_path, "ortho", "--bg-direction", "5:-20", "--generator", "scenes")
    assert result.returncode == 0, result.stderr
    s = torch.load(source / "models" / "deformator_20000.pt", weights_only=True)["log_mat_half"].double()
    expected = torch.linalg.matrix_exp(s - s.T)  # the last step's deformator
    tensors = load_file(str(out / "directions.safetensors"))
    assert torch.allclose(tensors["directions"].double(), expected, atol=1e-5)
    assert torch.allclose(tensors["bg_direction"].double(), -expected[:, 5], atol=1e-5)
    summary = json.loads((out / "directions.json").read_text())
    assert summary["bg_direction"]["index"] == 5 and summary["bg_direction"]["sign"] == -1
    assert summary["bg_direction"]["magnitude"] == 20 and summary["imported_from"]["step"] == 20000


def test_import_run_proj_linear_and_annotation(tmp_path):
    annotation = "0: zoom\n7: Background removal\n9: rotation\n"
    source, out, result = _imported(tmp_path, "proj", "--step", "10000", "--generator", "scenes", annotation=annotation,
                                    directions=10)
    assert result.returncode == 0, result.stderr
    weight = torch.load(source / "models" / "deformator_10000.pt", weights_only=True)["linear.weight"]
    tensors = load_file(str(out / "directions.safetensors"))
    assert tensors["directions"].shape == (12, 10)
    assert torch.allclose(tensors["directions"], weight / weight.norm(dim=0), atol=1e-6)
    summary = json.loads((out / "directions.json").read_text())
    assert summary["bg_direction"]["index"] == 7 and summary["bg_direction"]["magnitude"] == 26
    assert "Background removal" in summary["bg_direction"]["extra"]["chosen_by"]
    assert summary["imported_from"]["dropped_bias_norm"] > 0
    # linear: a column's own length scales the shift
    source, out, result = _imported(tmp_path, "linear", "--bg-direction", "2:10", "--generator", "scenes", directions=4)
    weight = torch.load(source / "models" / "deformator_20000.pt", weights_only=True)["linear.weight"]
    summary = json.loads((out / "directions.json").read_text())
    assert summary["bg_direction"]["magnitude"] == pytest.approx(10 * float(weight[:, 2].norm()), rel=1e-5)


@pytest.mark.parametrize("deformator, args, needle", [
    ("random", ["--bg-direction", "1"], "does not save a random deformator"),
    ("fc", ["--bg-direction", "1"], "not linear"),
    ("ortho", [], "names no background direction"),
    ("ortho", ["--bg-direction", "40"], "directions 0..11"),
    ("ortho", ["--bg-direction", "1", "--step", "5"], "no deformator_5.pt"),
])
def test_import_run_refusals_are_one_line_and_write_nothing(tmp_path, deformator, args, needle):
    _, out, result = _imported(tmp_path, deformator, *args, "--generator", "scenes")
    assert_one_line_error(result, needle)
    assert not (out / "directions.json").exists()


def test_an_imported_run_feeds_synthesis(tmp_path):
    source, run, result = _imported(tmp_path, "ortho", "--bg-direction", "3:6", "--generator", "scenes",
                                    latent=32, directions=32)
    assert result.returncode == 0, result.stderr
    pairs = tmp_path / "pairs"
    result = run_cli("synthesize", "--run", str(run), "--n", "16", "--out", str(pairs), "--classes", "0",
                     "--device", "cpu", "--min-area", "0", "--max-area", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["count"] == 16 and manifest["generator"] == "scenes"


def test_import_run_pads_short_directions_like_the_reference_and_keeps_the_latent_space(tmp_path, layouts):
    from pipelines.import_run import import_run

    source = write_reference_run(tmp_path / "ref", "proj", 24, 6, gan_type="StyleGAN2_ffhq",
                                 annotation="1: background blur\n4: background removal\n")
    args = json.loads((source / "args.json").read_text())
    (source / "args.json").write_text(json.dumps({**args, "w_shift": False}))
    summary = import_run(source, tmp_path / "ours", weights=str(layouts["stylegan2"]))  # latents of 64
    assert summary["generator"] == "stylegan2" and summary["generator_options"]["latent_space"] == "z"
    assert summary["bg_direction"]["index"] == 4  # the exact name wins over "background blur"
    directions = load_file(str(tmp_path / "ours" / "directions.safetensors"))["directions"]
    assert directions.shape == (64, 6) and torch.equal(directions[24:], torch.zeros(40, 6))
    assert summary["imported_from"]["rows"] == "24 -> 64 (zero-padded)"
    with pytest.raises(UserError, match="already holds a run"):
        import_run(source, tmp_path / "ours", bg_direction="1")
