"""Third-party ImageNet weights: the TFLite MobileNetV2 conversion, `fetch-weights`, the vote.

The conversion is tested on the shared copy of Google's file (``../shared/weights``), against
LiteRT's interpreter where that package installs; downloads only against a loopback server.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ECSSD, NEEDS_ECSSD, SHARED_TFLITE as TFLITE
from conftest import assert_one_line_error, run_cli
from saliency.core.errors import UserError

SHARED = TFLITE.parents[1]
needs_tflite = pytest.mark.skipif(not TFLITE.is_file(), reason="needs ../shared/weights/mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="module")
def converted():
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite

    return convert_mobilenet_v2_tflite(TFLITE)


@pytest.fixture(scope="module")
def mobilenet(converted):
    from torchvision.models import mobilenet_v2

    from saliency.tflite_mobilenet import pad_like_tensorflow

    model = mobilenet_v2(num_classes=1000)
    model.load_state_dict(converted, strict=True)
    return pad_like_tensorflow(model).eval()


def _imagenet_input(image) -> torch.Tensor:
    from saliency.classifiers import resize_center_crop
    from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD

    x = resize_center_crop(image, 256, 224)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


@needs_tflite
@pytest.mark.parametrize("picture, label", [("cat.bmp", "Egyptian cat"), ("bird.bmp", "chickadee")])
def test_converted_mobilenet_names_the_coral_test_pictures(mobilenet, picture, label):
    from PIL import Image
    from torchvision.models import ResNet18_Weights

    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        probability = mobilenet(_imagenet_input(Image.open(SHARED / "weights" / picture))[None]).softmax(1)[0]
    assert names[int(probability.argmax())] == label
    assert float(probability.max()) > 0.5


@needs_tflite
def test_conversion_keeps_torchvision_layout_and_drops_the_background_class(converted):
    from torchvision.models import mobilenet_v2

    reference = mobilenet_v2(num_classes=1000).state_dict()
    assert set(converted) == set(reference)
    assert all(converted[k].shape == reference[k].shape for k in reference)
    assert converted["classifier.1.weight"].shape == (1000, 1280)


@needs_tflite
@pytest.mark.skipif(not ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_conversion_agrees_with_litert_on_real_photographs(mobilenet):
    """Top-1 agreement >= 95 % with LiteRT running the uint8 graph, probabilities close."""
    interpreter_module = pytest.importorskip(
        "ai_edge_litert.interpreter", reason="ai-edge-litert does not install here (x86-64 Linux, CPython 3.10-3.13)")
    from PIL import Image

    interpreter = interpreter_module.Interpreter(model_path=str(TFLITE))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = target["quantization"]
    files = sorted((ECSSD / "images").glob("*.jpg"))[::3]  # 334 photographs
    agree, differences = 0, []
    for path in files:
        x = _imagenet_input(Image.open(path))
        pixels = (x * torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
                  + torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)).mul(255).round().clamp(0, 255)
        interpreter.set_tensor(source["index"], pixels.permute(1, 2, 0).numpy().astype(np.uint8)[None])
        interpreter.invoke()
        reference = (interpreter.get_tensor(target["index"])[0].astype(np.float64) - zero) * scale
        reference = reference[1:]  # index 0 is "background"
        with torch.no_grad():
            ours = mobilenet(((pixels / 255 - torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1))
                              / torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1))[None]).softmax(1)[0].numpy()
        agree += int(reference.argmax() == ours.argmax())
        differences.append(np.abs(reference - ours).max())
    assert agree / len(files) >= 0.95, agree / len(files)
    assert float(np.median(differences)) < 0.05, np.median(differences)


def test_conversion_refuses_a_file_that_is_not_tflite(tmp_path):
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite

    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TFLite model"):
        convert_mobilenet_v2_tflite(bogus)
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 200)
    with pytest.raises(UserError, match="TFLite"):
        convert_mobilenet_v2_tflite(damaged)


# ------------------------------------------------------------------------------ fetch-weights
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/short/"):  # promises the whole file, sends a third, hangs up
            data = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def weights_server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _cache_listing(torch_home: Path) -> list[str]:
    folder = torch_home / "hub" / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@needs_tflite
def test_fetch_weights_downloads_checks_converts_and_refuses_bad_files(weights_server, tmp_path):
    www, base = weights_server
    home = tmp_path / "torch-home"
    env = {"TORCH_HOME": str(home)}
    (www / "mobilenet_v2_1.0_224_quant.tflite").write_bytes(TFLITE.read_bytes())
    wrong = bytearray(TFLITE.read_bytes())
    wrong[len(wrong) // 2] ^= 0xFF  # one byte flipped
    (www / "wrong.tflite").write_bytes(bytes(wrong))

    # a wrong digest, a cut-short download, an unknown name, a --from copy that is not the file:
    # one line each, nothing in the cache
    for args, needle in ((("--url", base + "wrong.tflite"), "checksum mismatch"),
                         (("--url", base + "short/mobilenet_v2_1.0_224_quant.tflite"), "cut short"),
                         (("--from", str(SHARED / "weights" / "cat.bmp")), "expected 7aad0c74")):
        assert_one_line_error(run_cli("fetch-weights", "mobilenet-v2-imagenet", *args, env=env), needle)
        assert _cache_listing(home) == []
    assert_one_line_error(run_cli("fetch-weights", "vgg-imagenet", env=env), "unknown weights 'vgg-imagenet'")
    assert _cache_listing(home) == []

    result = run_cli("fetch-weights", "mobilenet-v2-imagenet", "--url", base + "mobilenet_v2_1.0_224_quant.tflite",
                     env=env)
    assert result.returncode == 0, result.stderr
    assert _cache_listing(home) == ["mobilenet_v2-tflite-7aad0c74.safetensors"]  # converted; no download left
    from safetensors import safe_open

    with safe_open(str(home / "hub" / "checkpoints" / "mobilenet_v2-tflite-7aad0c74.safetensors"), "pt") as handle:
        assert "7aad0c74c5e3c06e" in handle.metadata()["gan_saliency"]
        assert handle.get_tensor("classifier.1.weight").shape == (1000, 1280)
    again = run_cli("fetch-weights", "mobilenet-v2-imagenet", "--url", base + "missing.tflite", env=env)
    assert again.returncode == 0 and "already installed" in again.stdout  # the cache is used, nothing fetched


def test_fetch_weights_checks_torchvision_digest_prefix(weights_server, tmp_path):
    from saliency.downloads.weights import fetch_weights

    www, base = weights_server
    (www / "resnet18.pth").write_bytes(b"not the resnet")
    import os

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path / "home")
    try:
        with pytest.raises(UserError, match="checksum mismatch"):
            fetch_weights("resnet18-imagenet", url=base + "resnet18.pth", progress=False)
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old
    assert _cache_listing(tmp_path / "home") == []


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_authors_biggan_is_taken_from_its_archive_and_its_digest_recorded_then_checked(weights_server, tmp_path):
    """No digest is published for the reference code's archive: the first install records the
    archive's SHA-256 (trust on first use), a later one with other bytes is refused; only the
    G_ema.pth member is kept, read out by name (a member's path never decides where it lands)."""
    www, base = weights_server
    home = tmp_path / "torch-home"
    env = {"TORCH_HOME": str(home)}
    weights = b"the generator's weights"
    _tar(www / "pretrained_biggan.tar", {"pretrained/generators/BigGAN/G_ema.pth": weights,
                                         "pretrained/deformators/BigGAN/deformator_0.pt": b"not kept"})
    _tar(www / "other.tar", {"generators/BigGAN/G_ema.pth": b"other weights"})
    _tar(www / "none.tar", {"generators/BigGAN/G.pth": b"x"})
    _tar(www / "two.tar", {"a/G_ema.pth": b"x", "b/G_ema.pth": b"y"})
    (www / "plain.tar").write_bytes(b"not an archive at all" * 40)
    for archive, needle in (("none.tar", "0 files named G_ema.pth"), ("two.tar", "2 files named G_ema.pth"),
                            ("plain.tar", "not a readable tar archive")):
        result = run_cli("fetch-weights", "biggan-128-authors", "--url", base + archive, env=env)
        assert_one_line_error(result, needle)
        assert _cache_listing(home) == []  # nothing kept, no digest recorded

    result = run_cli("fetch-weights", "biggan-128-authors", "--url", base + "pretrained_biggan.tar", env=env)
    assert result.returncode == 0, result.stderr
    assert _cache_listing(home) == ["biggan-128-authors-G_ema.pth", "biggan-128-authors-G_ema.pth.sha256.json"]
    folder = home / "hub" / "checkpoints"
    assert (folder / "biggan-128-authors-G_ema.pth").read_bytes() == weights
    import hashlib
    import json

    record = json.loads((folder / "biggan-128-authors-G_ema.pth.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256((www / "pretrained_biggan.tar").read_bytes()).hexdigest()
    again = run_cli("fetch-weights", "biggan-128-authors", "--url", base + "other.tar", "--force", env=env)
    assert_one_line_error(again, "checksum mismatch")
    assert (folder / "biggan-128-authors-G_ema.pth").read_bytes() == weights  # the first install stands
    same = run_cli("fetch-weights", "biggan-128-authors", "--from", str(www / "pretrained_biggan.tar"), "--force",
                   env=env)
    assert same.returncode == 0, same.stderr


# ------------------------------------------------------------------------------ the vote
@needs_tflite
@pytest.mark.skipif(not ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_vote_with_mobilenet_on_ecssd_train_names_250_classes(tmp_path):
    import json

    out = tmp_path / "classes.json"
    result = run_cli("vote", "--dataset", "ecssd", "--classifier", "mobilenet-v2-imagenet", "--classifier-weights",
                     str(TFLITE), "--data-root", str(ECSSD.parent), "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    vote = json.loads(out.read_text())
    assert vote["images"] == 500 and sum(vote["counts"].values()) == 500 * 5
    assert len(vote["classes"]) == 250 and len(set(vote["classes"])) == 250
    counts = [vote["counts"][str(c)] for c in vote["classes"]]
    assert counts == sorted(counts, reverse=True)
    assert all(vote["class_names"][str(c)] for c in vote["classes"])
    assert vote["class_names"][str(vote["classes"][0])] in result.stdout  # the most voted, printed


def test_biggan_vote_prefers_resnet18_then_mobilenet_then_says_what_to_fetch(tmp_path, monkeypatch):
    from saliency.classifiers import default_classifier

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="fetch-weights"):
        default_classifier("biggan-deep-128")
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "mobilenet_v2-tflite-7aad0c74.safetensors").write_bytes(b"x")
    assert default_classifier("biggan-deep-128")[0] == "mobilenet-v2-imagenet"
    (folder / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert default_classifier("biggan-deep-128")[0] == "resnet18-imagenet"
    assert default_classifier("scenes")[0] == "scenes-shapes"


# ------------------------------------------------------------------------------ the U-Net encoder
@needs_tflite
def test_mobilenet_encoder_takes_the_converted_weights_and_freezes(tmp_path, monkeypatch, converted):
    from saliency.downloads.weights import fetch_weights
    from saliency.training import freeze, set_training_mode
    from saliency.unet import UNetArchitecture, build_unet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = UNetArchitecture(encoder="mobilenet_v2", encoder_weights="imagenet")
    with pytest.raises(UserError, match="fetch-weights mobilenet-v2-imagenet"):
        build_unet(arch)
    fetch_weights("mobilenet-v2-imagenet", source=TFLITE, progress=False)
    net = build_unet(arch)
    encoder = net.encoder.state_dict()
    assert all(torch.equal(encoder[k], converted[k]) for k in encoder)

    freeze(net)
    set_training_mode(net, freeze_encoder=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = net(torch.randn(2, 3, 64, 64)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("encoder."))  # incl. BN statistics
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("decoder."))


def test_vote_refuses_bad_input_in_one_line(tmp_path):
    cases = ((("--classifier", "vgg-imagenet", "--out", str(tmp_path / "a.json"), "--data-root", str(tmp_path)),
              "unknown classifier 'vgg-imagenet'"),
             (("--classifier", "scenes-shapes", "--out", str(tmp_path)), "is a directory"),
             (("--classifier", "scenes-shapes", "--out", str(tmp_path / "b.json"), "--data-root",
               str(tmp_path / "nowhere")), "nowhere"))
    for args, needle in cases:
        assert_one_line_error(run_cli("vote", *args), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
