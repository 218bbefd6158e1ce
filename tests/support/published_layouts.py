"""Random weights in the key layouts of the checkpoints the paper's reference code loads.

Each builder writes what the original code's ``state_dict()`` holds, key by key, from a
description of that code (module names, buffers, shapes), independently of this project's
modules: a test that loads these files proves our loaders accept the published layout, not
merely their own output. Widths are parameters so tests stay small; the layout does not
depend on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bn(prefix: str, channels: int, rng: torch.Generator) -> dict:
    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(channels, generator=rng),
            f"{prefix}.bias": 0.1 * torch.randn(channels, generator=rng),
            f"{prefix}.running_mean": 0.1 * torch.randn(channels, generator=rng),
            f"{prefix}.running_var": 1 + 0.1 * torch.rand(channels, generator=rng),
            f"{prefix}.num_batches_tracked": torch.tensor(1000)}


def _conv(prefix: str, c_in: int, c_out: int, k: int, rng: torch.Generator, bias: bool = True) -> dict:
    state = {f"{prefix}.weight": torch.randn(c_out, c_in, k, k, generator=rng) / (c_in * k * k) ** 0.5}
    if bias:
        state[f"{prefix}.bias"] = 0.01 * torch.randn(c_out, generator=rng)
    return state


# ------------------------------------------------------------------- SN-GAN (GenWrapper)
def sngan_generator_state(widths, image_channels: int, latent_dim: int = 128, seed: int = 0) -> dict:
    """The reference code's ``make_resnet_generator`` wrapped in ``GenWrapper``: keys under
    ``model.``; each ResBlockGenerator holds conv1/conv2 twice (attribute and inside ``model``)."""
    rng = _g(seed)
    state = {"model.0.weight": torch.randn(16 * widths[0], latent_dim, generator=rng) / latent_dim ** 0.5,
             "model.0.bias": 0.01 * torch.randn(16 * widths[0], generator=rng)}
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        block = f"model.{2 + i}"
        conv1 = _conv("conv1", c_in, c_out, 3, rng)
        conv2 = _conv("conv2", c_out, c_out, 3, rng)
        for name, tensor in conv1.items():
            state[f"{block}.{name}"] = tensor
            state[f"{block}.model.3.{name.split('.')[1]}"] = tensor
        for name, tensor in conv2.items():
            state[f"{block}.{name}"] = tensor
            state[f"{block}.model.6.{name.split('.')[1]}"] = tensor
        state.update(_bn(f"{block}.model.0", c_in, rng))
        state.update(_bn(f"{block}.model.4", c_out, rng))
        if c_in != c_out:
            state.update(_conv(f"{block}.bypass.1", c_in, c_out, 3, rng))
    n = len(widths) - 1
    state.update(_bn(f"model.{2 + n}", widths[-1], rng))
    state.update(_conv(f"model.{4 + n}", widths[-1], image_channels, 3, rng))
    return state


def write_sngan_run_folder(folder: Path, widths, image_channels: int, model: str, latent_dim: int = 128,
                           seed: int = 0) -> Path:
    """The reference code's SN-GAN folder: ``args.json`` + ``generator.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps({"model": model, "latent_dim": latent_dim,
                                                  "image_channels": image_channels}), encoding="utf-8")
    torch.save(sngan_generator_state(widths, image_channels, latent_dim, seed), folder / "generator.pt")
    return folder


# ------------------------------------------------------------- ProgGAN (the reference's port)
def proggan_state(widths, latent_dim: int = 512, seed: int = 0) -> dict:
    """``features.N`` (NormConvBlock / NormUpscaleConvBlock: conv without bias, wscale.scale
    and wscale.b) and ``output`` (norm, 1x1 conv, wscale)."""
    rng = _g(seed)
    layers = [(latent_dim, widths[0], 4), (widths[0], widths[0], 3)]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [(c_in, c_out, 3), (c_out, c_out, 3)]
    state = {}
    for i, (c_in, c_out, k) in enumerate(layers):
        state[f"features.{i}.conv.weight"] = torch.randn(c_out, c_in, k, k, generator=rng)
        state[f"features.{i}.wscale.scale"] = torch.tensor([(2.0 / (c_in * k * k)) ** 0.5])
        state[f"features.{i}.wscale.b"] = 0.01 * torch.randn(c_out, generator=rng)
    state["output.conv.weight"] = torch.randn(3, widths[-1], 1, 1, generator=rng)
    state["output.wscale.scale"] = torch.tensor([(1.0 / widths[-1]) ** 0.5])
    state["output.wscale.b"] = torch.zeros(3)
    return state


# -------------------------------------------------------------- StyleGAN2 (rosinality's port)
def _blur(scale: float) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum() * scale


def stylegan2_checkpoint(widths, style_dim: int = 512, n_mlp: int = 8, seed: int = 0) -> dict:
    """``{"g_ema": ...}`` as stylegan2-pytorch saves it (plus a ``latent_avg``)."""
    rng = _g(seed)
    state = {}
    for i in range(1, n_mlp + 1):
        state[f"style.{i}.weight"] = torch.randn(style_dim, style_dim, generator=rng) * 100  # / lr_mul
        state[f"style.{i}.bias"] = torch.zeros(style_dim)

    def modulated(prefix: str, c_in: int, c_out: int, k: int) -> None:
        state[f"{prefix}.weight"] = torch.randn(1, c_out, c_in, k, k, generator=rng)
        state[f"{prefix}.modulation.weight"] = torch.randn(c_in, style_dim, generator=rng)
        state[f"{prefix}.modulation.bias"] = torch.ones(c_in)

    def styled(prefix: str, c_in: int, c_out: int, upsample: bool) -> None:
        modulated(f"{prefix}.conv", c_in, c_out, 3)
        if upsample:
            state[f"{prefix}.conv.blur.kernel"] = _blur(4.0)
        state[f"{prefix}.noise.weight"] = 0.1 * torch.rand(1, generator=rng)
        state[f"{prefix}.activate.bias"] = 0.01 * torch.randn(c_out, generator=rng)

    state["input.input"] = torch.randn(1, widths[0], 4, 4, generator=rng)
    styled("conv1", widths[0], widths[0], False)
    modulated("to_rgb1.conv", widths[0], 3, 1)
    state["to_rgb1.bias"] = torch.zeros(1, 3, 1, 1)
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        styled(f"convs.{2 * i}", c_in, c_out, True)
        styled(f"convs.{2 * i + 1}", c_out, c_out, False)
        modulated(f"to_rgbs.{i}.conv", c_out, 3, 1)
        state[f"to_rgbs.{i}.bias"] = torch.zeros(1, 3, 1, 1)
        state[f"to_rgbs.{i}.upsample.kernel"] = _blur(4.0)
    for i in range(2 * len(widths) - 1):
        size = 2 ** ((i + 5) // 2)
        state[f"noises.noise_{i}"] = torch.randn(1, 1, size, size, generator=rng)
    return {"g_ema": state, "latent_avg": torch.zeros(style_dim)}


# ---------------------------------------------------------- BigGAN-PyTorch (G_ema.pth, 128 px)
def biggan_pytorch_state(ch: int = 4, z_chunk: int = 20, shared_dim: int = 128, num_classes: int = 1000,
                         seed: int = 0) -> dict:
    """BigGAN-PyTorch's Generator at 128 px (arch[128]: widths 16, 16, 8, 4, 2, 1 times ch,
    attention at 64 px), hierarchical z, shared embedding; every SN layer carries u0 and sv0."""
    rng = _g(seed)
    widths = [ch * m for m in (16, 16, 8, 4, 2, 1)]
    condition = shared_dim + z_chunk
    state = {"shared.weight": torch.randn(num_classes, shared_dim, generator=rng)}

    def sn(prefix: str, shape, bias: bool) -> None:
        state[f"{prefix}.weight"] = torch.randn(*shape, generator=rng) * 0.5
        if bias:
            state[f"{prefix}.bias"] = 0.01 * torch.randn(shape[0], generator=rng)
        state[f"{prefix}.u0"] = torch.randn(1, shape[0], generator=rng)
        state[f"{prefix}.sv0"] = torch.ones(1)

    sn("linear", (widths[0] * 16, z_chunk), True)
    for b, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        p = f"blocks.{b}.0"
        sn(f"{p}.conv1", (c_out, c_in, 3, 3), True)
        sn(f"{p}.conv2", (c_out, c_out, 3, 3), True)
        sn(f"{p}.conv_sc", (c_out, c_in, 1, 1), True)
        for bn, c in (("bn1", c_in), ("bn2", c_out)):
            sn(f"{p}.{bn}.gain", (c, condition), False)
            sn(f"{p}.{bn}.bias", (c, condition), False)
            state[f"{p}.{bn}.stored_mean"] = 0.1 * torch.randn(c, generator=rng)
            state[f"{p}.{bn}.stored_var"] = 1 + 0.1 * torch.rand(c, generator=rng)
        if 4 * 2 ** (b + 1) == 64:
            a = f"blocks.{b}.1"
            sn(f"{a}.theta", (c_out // 8, c_out, 1, 1), False)
            sn(f"{a}.phi", (c_out // 8, c_out, 1, 1), False)
            sn(f"{a}.g", (c_out // 2, c_out, 1, 1), False)
            sn(f"{a}.o", (c_out, c_out // 2, 1, 1), False)
            state[f"{a}.gamma"] = torch.tensor(0.2)
    state["output_layer.0.gain"] = torch.ones(widths[-1])
    state["output_layer.0.bias"] = torch.zeros(widths[-1])
    state["output_layer.0.stored_mean"] = torch.zeros(widths[-1])
    state["output_layer.0.stored_var"] = torch.ones(widths[-1])
    sn("output_layer.2", (3, widths[-1], 3, 3), True)
    return state


# ------------------------------------------------------------- a run of the reference trainer
def write_reference_run(folder: Path, deformator: str, latent_dim: int, directions: int, gan_type: str = "BigGAN",
                        steps=(10000, 20000), annotation: str | None = None, bias: bool = True, seed: int = 0) -> Path:
    """``args.json``, ``models/deformator_STEP.pt`` (LatentDeformator.state_dict()),
    ``models/shift_predictor_STEP.pt`` and optionally ``human_annotation.txt``."""
    rng = _g(seed)
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps({
        "gan_type": gan_type, "deformator": deformator, "directions_count": directions,
        "max_latent_dim": latent_dim, "shift_predictor": "ResNet", "target_class": [239], "out": str(folder),
    }), encoding="utf-8")
    for step in steps:
        if deformator == "ortho":
            state = {"log_mat_half": torch.randn(latent_dim, latent_dim, generator=rng)}
        elif deformator in ("proj", "linear"):
            state = {"linear.weight": torch.randn(latent_dim, directions, generator=rng)}
            if bias:
                state["linear.bias"] = 0.01 * torch.randn(latent_dim, generator=rng)
        elif deformator == "fc":
            state = {"fc1.weight": torch.randn(16, directions, generator=rng), "fc1.bias": torch.zeros(16)}
        else:
            state = {}
        torch.save(state, models / f"deformator_{step}.pt")
        torch.save({"type_estimator.weight": torch.randn(directions, 512, generator=rng)},
                   models / f"shift_predictor_{step}.pt")
    if annotation is not None:
        (folder / "human_annotation.txt").write_text(annotation, encoding="utf-8")
    return folder


def save_random_biggan(folder, seed: int = 0, config: dict | None = None) -> Path:
    """Write a random-weight BigGAN-deep in the hub's file format, config.json and the pickled
    pytorch_model.bin (for tests and benchmarks; the project itself writes no pickle).

    The package's random init leaves the last batch norm's affine parameters uninitialised
    (NaN images); they are set to identity here, and a few power iterations make the
    spectral norms consistent so the images are finite and varied.
    """
    import torch.nn.functional as F
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    from directions.generators.biggan import CONFIG_NAME, WEIGHTS_NAME

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BigGANConfig.from_dict(config) if config else BigGANConfig()
    model = BigGAN(cfg)
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
        model.train()
        z = torch.randn(2, cfg.z_dim)
        one_hot = F.one_hot(torch.tensor([0, 1]), cfg.num_classes).float()
        for _ in range(3):
            model(z, one_hot, 0.4)
    (folder / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    torch.save(model.state_dict(), folder / WEIGHTS_NAME)
    return folder
