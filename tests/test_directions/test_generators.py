"""The generator registry, the device choice, and the BigGAN / DCGAN loaders on real formats."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from directions.generators import Generator, available_generators, build_generator
from directions.generators.biggan import CONFIG_NAME, HUB_REVISION, WEIGHTS_NAME
from published_layouts import save_random_biggan
from directions.generators.dcgan_faces import CHECKPOINT_KEY, DCGANFaces
from saliency.core.device import resolve_device
from saliency.core.errors import UserError
from loopback_hub import HubHandler
from conftest import run_cli

HAS_FACES = importlib.util.find_spec("gan_face_generate") is not None


# ------------------------------------------------------------------------------ registry
def test_registry_knows_the_generators():
    assert {"scenes", "biggan-deep-128", "dcgan-faces", "sngan-mnist", "sngan-anime", "proggan-celebahq", "stylegan2",
            "biggan-128"} <= set(available_generators())


def test_built_generator_is_frozen_in_eval_mode_on_the_device():
    gen = build_generator("scenes", device="cpu", resolution=32)
    assert not gen.training
    assert gen.device == torch.device("cpu") and gen.resolution == 32
    weighted = build_generator("sngan-mnist", device="cpu")  # scenes has no weights to freeze
    assert not weighted.training and not any(m.training for m in weighted.modules())
    assert sum(p.numel() for p in weighted.parameters()) > 0
    assert all(not p.requires_grad for p in weighted.parameters())


def test_unknown_generator_and_unknown_option_are_user_errors():
    with pytest.raises(UserError, match="unknown generator 'nope'.*scenes"):
        build_generator("nope")
    with pytest.raises(UserError, match="does not take --truncation"):
        build_generator("scenes", truncation=0.5)
    gen = build_generator("scenes", truncation=None, resolution=16)  # unset flags are dropped
    assert gen.resolution == 16


def test_a_users_generator_in_one_file_by_import_path():
    gen = build_generator("toy_generators:build_toy", resolution=6)
    assert isinstance(gen, Generator) and not gen.conditional
    z = gen.sample_latents(3, torch.Generator().manual_seed(0))
    assert gen.sample_classes(3) is None
    image = gen(z)
    assert image.shape == (3, 3, 6, 6)
    with pytest.raises(UserError, match="did not return"):
        build_generator("toy_generators:not_a_generator")
    with pytest.raises(UserError, match="no generator factory"):
        build_generator("toy_generators:missing")
    with pytest.raises(UserError, match="cannot import"):
        build_generator("no_such_module_xyz:build")


def test_dtype_and_device_are_handled_by_the_base_class():
    gen = build_generator("scenes", device="cpu", resolution=16).to(torch.float64)
    assert gen.dtype == torch.float64
    z = torch.randn(2, gen.latent_dim)  # float32 in, converted once
    assert gen(z, [0, 1]).dtype == torch.float64
    assert gen.sample_latents(2).dtype == torch.float64


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("warp-drive")


# ------------------------------------------------------------------------------ BigGAN
@pytest.fixture(scope="session")
def biggan_folder(tmp_path_factory) -> Path:
    """A random-weight BigGAN-deep-128 in the hub's file format (config.json + .bin)."""
    return save_random_biggan(tmp_path_factory.mktemp("biggan"), seed=0)


@pytest.fixture(scope="session")
def biggan(biggan_folder):
    return build_generator("biggan-deep-128", device="cpu", weights=str(biggan_folder))


def test_biggan_loader_rebuilds_what_torch_can_and_names_every_other_difference(tmp_path):
    """A file in the upstream class's own layout: an older torch's spectral-norm ``weight``
    in place of ``weight_v`` is rebuilt (as torch does); a removed or an added key is refused
    by name, where the upstream loader (strict=False) would run with a random weight."""
    import shutil
    from collections import OrderedDict

    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    source = save_random_biggan(tmp_path / "source", seed=3, config={"channel_width": 8, "num_classes": 20})
    config = BigGANConfig.from_dict(__import__("json").loads((source / CONFIG_NAME).read_text()))
    reference = BigGAN(config).eval()
    state = torch.load(source / WEIGHTS_NAME, weights_only=True)
    reference.load_state_dict(state)
    with torch.no_grad():  # spectral norm sets ``weight`` = weight_orig / sigma in each forward
        reference(torch.zeros(1, config.z_dim), F.one_hot(torch.tensor([0]), 20).float(), 0.4)

    def write(name: str, new_state) -> str:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(source / CONFIG_NAME, folder / CONFIG_NAME)
        torch.save(new_state, folder / WEIGHTS_NAME)
        return str(folder)

    # an older torch's file: "gen_z.weight" (W / sigma) saved, no "gen_z.weight_v", no version
    old = OrderedDict(state)
    old._metadata = OrderedDict((k, dict(v)) for k, v in state._metadata.items())
    layer = reference.generator.gen_z
    old["generator.gen_z.weight"] = layer.weight.detach().clone()
    del old["generator.gen_z.weight_v"]
    old._metadata["generator.gen_z"].pop("spectral_norm", None)
    gen = build_generator("biggan-deep-128", device="cpu", weights=write("older-torch", old))
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = (reference(z, F.one_hot(torch.tensor([1, 2]), 20).float(), 0.4) + 1) / 2
        assert torch.allclose(gen(z, [1, 2]), expected, atol=1e-4)

    removed = OrderedDict(state)
    removed._metadata = state._metadata
    del removed["generator.gen_z.weight_v"]  # a current file missing it: nothing can rebuild it
    removed["generator.extra.weight"] = torch.zeros(3)
    with pytest.raises(UserError, match=r"missing 1 key\(s\): generator.gen_z.weight_v; "
                                        r"unexpected 1 key\(s\): generator.extra.weight"):
        build_generator("biggan-deep-128", weights=write("removed-and-extra", removed))


def test_biggan_from_a_weights_folder_gives_finite_images_in_unit_range(biggan):
    assert (biggan.latent_dim, biggan.num_classes, biggan.resolution) == (128, 1000, 128)
    rng = torch.Generator().manual_seed(0)
    z = biggan.sample_latents(2, rng)
    with torch.no_grad():
        images = biggan(z, [1, 500])
    assert images.shape == (2, 3, 128, 128)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert not torch.allclose(images[0], images[1])


def test_biggan_is_differentiable_in_z(biggan):
    z = biggan.sample_latents(1, torch.Generator().manual_seed(1)).requires_grad_(True)
    biggan(z, [3]).mean().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_biggan_latents_follow_the_truncated_prior(biggan):
    z = biggan.sample_latents(4000, torch.Generator().manual_seed(2))
    assert z.abs().max() <= 2 * biggan.truncation + 1e-6
    assert abs(float(z.mean())) < 0.01
    # std of N(0,1) truncated to [-2, 2] is 0.880
    assert abs(float(z.std()) - 0.880 * biggan.truncation) < 0.01
    again = biggan.sample_latents(4000, torch.Generator().manual_seed(2))
    assert torch.equal(z, again)


def test_biggan_truncation_out_of_range(biggan_folder):
    with pytest.raises(UserError, match="truncation"):
        build_generator("biggan-deep-128", weights=str(biggan_folder), truncation=1.5)


class _HubHandler(HubHandler):
    repo = "osanseviero/BigGAN-deep-128"
    commit = HUB_REVISION  # the commit the code pins: the only one a download may ask for
    files: dict[str, bytes] = {}
    requests: list[str] = []


def test_biggan_downloads_from_the_hub_then_loads_offline_from_its_cache(
    biggan_folder, biggan, tmp_path, monkeypatch
):
    """The user's path: huggingface_hub downloads into its cache (here from a hub on
    loopback), and later runs load offline from that cache."""
    _HubHandler.files = {name: (biggan_folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}
    _HubHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # huggingface_hub reads HF_ENDPOINT once, at import, and some of its requests use only that
    # (found by the tests' network guard when another test had imported it first).
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    try:
        online = build_generator("biggan-deep-128", device="cpu")
    finally:
        server.shutdown()
        server.server_close()
    assert any(WEIGHTS_NAME in r and r.startswith("GET") for r in _HubHandler.requests)
    assert list(cache.glob("models--osanseviero--BigGAN-deep-128/snapshots/*/" + WEIGHTS_NAME))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = build_generator("biggan-deep-128", device="cpu")
    z = biggan.sample_latents(1, torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = biggan(z, [7])
        assert torch.equal(online(z, [7]), reference)
        assert torch.equal(offline(z, [7]), reference)


def test_fetch_weights_biggan_records_revision_and_digests_then_checks_them(biggan_folder, tmp_path, monkeypatch):
    """No published digests: the first download records them (and the revision), later uses
    load that revision and refuse a file that changed."""
    import json

    from directions.generators.biggan import DIGESTS_NAME

    _HubHandler.files = {name: (biggan_folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}
    _HubHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "hub"
    env = {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_OFFLINE": "0"}
    try:
        first = run_cli("fetch-weights", "biggan-deep-128", env=env)
        assert first.returncode == 0, first.stderr
        record_path = cache / "models--osanseviero--BigGAN-deep-128" / DIGESTS_NAME
        record = json.loads(record_path.read_text())
        assert record["revision"] == HUB_REVISION
        # the pinned commit from the first request on: never whatever "main" points at now
        assert not any("/resolve/main/" in r for r in _HubHandler.requests), _HubHandler.requests
        assert any(f"/resolve/{HUB_REVISION}/{WEIGHTS_NAME}" in r for r in _HubHandler.requests)
        assert record["files"][WEIGHTS_NAME] == hashlib.sha256(_HubHandler.files[WEIGHTS_NAME]).hexdigest()
        _HubHandler.requests = []
        again = run_cli("fetch-weights", "biggan-deep-128", env=env)
        assert again.returncode == 0, again.stderr
        # the recorded commit, not "main": huggingface_hub serves a cached commit without asking
        assert not any("/resolve/main/" in r for r in _HubHandler.requests), _HubHandler.requests
    finally:
        server.shutdown()
        server.server_close()
    cached = next(cache.glob("models--osanseviero--BigGAN-deep-128/snapshots/*/" + WEIGHTS_NAME)).resolve()
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x01")  # the cached file changed under us
    for key, value in {**env, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match="recorded at the first download"):
        build_generator("biggan-deep-128", device="cpu")


def test_biggan_offline_without_weights_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="config.json and pytorch_model.bin.*pass weights DIR"):
        build_generator("biggan-deep-128")
    with pytest.raises(UserError, match="lacks config.json and pytorch_model.bin"):
        build_generator("biggan-deep-128", weights=str(tmp_path))


def test_biggan_weights_that_would_run_code_are_refused(biggan_folder, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / CONFIG_NAME).write_bytes((biggan_folder / CONFIG_NAME).read_bytes())
    torch.save({"generator.bn.weight": Exploit()}, folder / WEIGHTS_NAME)
    with pytest.raises(UserError, match="could run code"):
        build_generator("biggan-deep-128", weights=str(folder))
    assert not marker.exists()


def test_biggan_truncated_weights_file_is_a_user_error(biggan_folder, tmp_path):
    folder = tmp_path / "torn"
    folder.mkdir()
    (folder / CONFIG_NAME).write_bytes((biggan_folder / CONFIG_NAME).read_bytes())
    data = (biggan_folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cannot load"):
        build_generator("biggan-deep-128", weights=str(folder))
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(UserError, match="not a valid BigGAN config"):
        build_generator("biggan-deep-128", weights=str(folder))


# ------------------------------------------------------------------------------ DCGAN
@pytest.mark.skipif(not HAS_FACES, reason="gan-face-generate is not installed "
                    "(pip install --no-deps gan-face-generate==1.1.1); CI installs it")
def test_dcgan_faces_loads_the_packaged_pretrained_weights():
    gen = build_generator("dcgan-faces", device="cpu")
    assert (gen.latent_dim, gen.num_classes, gen.resolution) == (100, 0, 64)
    z = gen.sample_latents(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        faces = gen(z)
    assert faces.shape == (8, 3, 64, 64)
    assert torch.isfinite(faces).all() and faces.min() >= 0 and faces.max() <= 1
    # Trained weights draw structured images: neighbouring pixels agree far more than noise.
    horizontal = (faces[..., 1:] - faces[..., :-1]).abs().mean()
    assert horizontal < 0.5 * faces.std()
    assert faces.std(dim=0).mean() > 0.05  # and the faces differ


def test_dcgan_checkpoint_format_round_trip(tmp_path):
    torch.manual_seed(0)
    net = DCGANFaces()
    for module in net.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "weights.tar"
    torch.save({CHECKPOINT_KEY: net.state_dict()}, path)
    gen = build_generator("dcgan-faces", device="cpu", weights=str(path))
    z = gen.sample_latents(2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(gen(z), net.eval()(z), atol=1e-6)
    torch.save({"wrong_key": net.state_dict()}, path)
    with pytest.raises(UserError, match="no 'netG_state_dict'"):
        build_generator("dcgan-faces", weights=str(path))
    state = net.state_dict()
    state.pop("main.0.weight")
    torch.save({CHECKPOINT_KEY: state}, path)
    with pytest.raises(UserError, match="does not fit the architecture"):
        build_generator("dcgan-faces", weights=str(path))
