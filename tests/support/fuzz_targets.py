"""The project's readers of outside data as fuzz targets, for hypothesis.

Each family has seeds (valid files of its kind, made here) and a ``run(data, folder)`` that
writes the bytes where a command would find them and calls the project's reader on them the
way the command does. The property every family shares: the reader returns a value or raises
the project's own one-line UserError; any other exception, an input that takes longer than
``SECONDS_PER_INPUT`` of CPU, or a file written outside ``folder`` is a finding.

tests/contracts/test_fuzz_readers.py runs each family briefly with a fixed seed;
benchmarks/fuzz_readers.py runs them for as long as asked and writes what it found.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

from saliency.core.errors import UserError

SECONDS_PER_INPUT = 10.0  # of CPU
WALL_SECONDS_PER_INPUT = 60.0
REPO = Path(__file__).resolve().parents[2]
# Real files where a clone has them (../shared beside it): seeds for the long run; a family
# whose seeds are all real has none without them (its short test then skips).
SHARED = None if os.environ.get("SALIENCY_TESTS_WITHOUT_DATA") == "1" else REPO.parent / "shared"


@dataclass(frozen=True)
class Family:
    name: str
    seeds: Callable[[], list[bytes]]  # valid inputs to mutate
    run: Callable[[bytes, Path], None]  # feed one input to the readers
    structured: Callable[[], st.SearchStrategy] | None = None  # inputs built from the format's parts
    # (start, end) byte ranges of a seed worth most of the edits (a format's tables, not its
    # bulk data): given the seed, where mutations land half the time
    hot: Callable[[bytes], list[tuple[int, int]]] | None = None


# ---------------------------------------------------------------------------- mutation
@st.composite
def mutated(draw, seeds: list[bytes], hot: dict[int, list[tuple[int, int]]] | None = None) -> bytes:
    """A seed with a few byte-level edits: flips, overwrites, cuts, insertions, repeats, and a
    header field set to an extreme (0, 0xFF.., a large count)."""
    which = draw(st.integers(0, len(seeds) - 1))
    data = bytearray(seeds[which])
    ranges = (hot or {}).get(which)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "truncate", "insert", "repeat", "extreme"]))
        if ranges and draw(st.booleans()):
            start, end = draw(st.sampled_from(ranges))
            at = min(draw(st.integers(start, max(start, end - 1))), max(0, len(data) - 1))
        else:
            at = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at: at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "repeat":
            data[at:at] = data[at: at + draw(st.integers(1, 256))]
        else:  # a little-endian 32-bit field set to an extreme value
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65_535, 100_000]))
            data[at: at + 4] = value.to_bytes(4, "little")
    return bytes(data)


def inputs(family: Family) -> st.SearchStrategy:
    seeds = family.seeds()
    hot = {index: family.hot(seed) for index, seed in enumerate(seeds)} if family.hot else None
    strategy = mutated(seeds, hot) | st.sampled_from(seeds)
    if family.structured is not None:
        strategy = strategy | family.structured()
    return strategy


def check(family: Family, data: bytes, folder: Path) -> None:
    """Run one input; raise AssertionError (or the escaped exception) on a finding."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder.parent
    before = {p for p in outside.rglob("*") if not p.is_relative_to(folder)}
    started, started_cpu = time.monotonic(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            family.run(data, folder)
        except UserError as exc:
            assert "\n" not in str(exc).strip(), f"a multi-line error: {exc!r}"
    took, took_cpu = time.monotonic() - started, time.process_time() - started_cpu
    printed = [f"{w.category.__name__} ({w.filename}:{w.lineno}): {w.message}" for w in caught
               if not issubclass(w.category, DeprecationWarning)]
    assert not printed, f"{family.name}: a warning would print beside the one line: {printed[0][:300]}"
    # CPU time bounds the work (a shared machine stretches the wall clock); the wall clock,
    # more loosely, a wait that never ends
    assert took_cpu < SECONDS_PER_INPUT, f"{family.name}: one input took {took_cpu:.1f} s of CPU"
    assert took < WALL_SECONDS_PER_INPUT, f"{family.name}: one input took {took:.1f} s"
    after = {p for p in outside.rglob("*") if not p.is_relative_to(folder)}
    assert after == before, f"{family.name}: wrote outside its folder: {sorted(map(str, after - before))[:3]}"


# ------------------------------------------------------------------------------ images
def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    seeds = []
    for image, fmt, options in ((pixels, "JPEG", {"quality": 80}), (pixels, "PNG", {}), (pixels, "WEBP", {}),
                                (pixels, "BMP", {}), (pixels, "TIFF", {}), (pixels.convert("P"), "GIF", {}),
                                (pixels.convert("L"), "PNG", {}), (pixels.convert("RGBA"), "PNG", {}),
                                (pixels, "JPEG", {"progressive": True})):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        seeds.append(buffer.getvalue())
    mask = Image.fromarray((rng.random((24, 32)) > 0.5).astype(np.uint8) * 255)
    for image, fmt in ((mask, "PNG"), (mask.convert("1"), "PNG"), (mask, "BMP"), (mask, "GIF")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        seeds.append(buffer.getvalue())
    return seeds + _real_images()


def _real_images() -> list[bytes]:
    """Two ECSSD photographs, their masks and two BMPs, where the clone has ../shared."""
    if SHARED is None:
        return []
    ecssd = SHARED / "datasets" / "ECSSD"
    files = [ecssd / "images" / "0001.jpg", ecssd / "images" / "0002.jpg", ecssd / "ground_truth_mask" / "0001.png",
             ecssd / "ground_truth_mask" / "0002.png", SHARED / "weights" / "cat.bmp"]
    return [path.read_bytes() for path in files if path.is_file() and path.stat().st_size < 1 << 20]


def _run_image(data: bytes, folder: Path) -> None:
    from saliency.datasets import load_image, load_image_for_model, load_mask

    path = folder / "input.png"
    path.write_bytes(data)
    image = load_image(path)
    assert image.mode == "RGB"
    pixels, original = load_image_for_model(path, 64)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3 and len(original) == 2
    mask = load_mask(path)
    assert mask.dtype == bool and mask.ndim == 2


# --------------------------------------------------------------------------------- JSON
def _valid_run_folder_files() -> dict[str, dict]:
    return {
        "directions.json": {"generator": "scenes", "generator_options": {"resolution": 32}, "latent_dim": 32,
                            "num_directions": 1, "bg_direction": {"index": 0, "sign": 1, "magnitude": 6.0,
                                                                  "threshold": 0.95, "vector": [0.1] * 4}},
        "model.json": {"format": "gan-saliency-unet/1", "architecture": {"encoder": "resnet18",
                       "decoder_channels": [16, 8, 8, 8, 8], "classes": 2, "encoder_weights": None},
                       "data": {"resolution": [64, 64], "classes": [0, 1]}, "card": {}},
        "manifest.json": {"format": "gan-saliency-pairs/1", "count": 2, "height": 8, "width": 8,
                          "shards": [{"file": "shard-00000.safetensors", "count": 2, "sha256": "0" * 64}]},
        "pipeline.json": {"profile": "embedded", "stages": {"discover": {"seconds": 1.0}}},
    }


def _json_seeds() -> list[bytes]:
    return [json.dumps({"name": name, "value": value}).encode() for name, value in _valid_run_folder_files().items()]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@st.composite
def _json_structured(draw) -> bytes:
    """A valid file with one value replaced by arbitrary JSON, or one key removed, or junk whole."""
    name, value = draw(st.sampled_from(sorted(_valid_run_folder_files().items())))
    value = json.loads(json.dumps(value))
    if draw(st.booleans()):
        value = draw(_JSON)
    else:
        node = value
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(_JSON)
    return json.dumps({"name": name, "value": value}).encode()


def _run_json(data: bytes, folder: Path) -> None:
    """The wrapper names which file the value becomes; a broken wrapper fuzzes every reader."""
    from directions.run_folder import load_run
    from saliency.shards import load_manifest
    from saliency.unet import read_model_meta

    try:
        wrapper = json.loads(data)
        name, text = wrapper["name"], json.dumps(wrapper["value"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        name, text = None, data.decode("utf-8", errors="replace")
    names = [name] if name in _valid_run_folder_files() else list(_valid_run_folder_files())
    for file_name in names:
        (folder / file_name).write_text(text, encoding="utf-8")
    readers = {"directions.json": load_run, "model.json": read_model_meta, "manifest.json": load_manifest,
               "pipeline.json": _read_pipeline_record}
    for file_name in names:
        try:
            readers[file_name](folder)
        except UserError:
            continue


def _read_pipeline_record(folder: Path) -> None:
    from saliency.core.json_files import read_json

    read_json(folder / "pipeline.json", {"stages?": dict})


# -------------------------------------------------------------------------- safetensors
def _safetensors_seeds() -> list[bytes]:
    from safetensors.torch import save

    from saliency.core.checkpoint import save_checkpoint

    seeds = [save({"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(4, dtype=torch.uint8)},
                  metadata={"format": "x"})]
    import tempfile

    from saliency.shards import write_shard

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.safetensors"
        save_checkpoint(path, {"step": 3, "weights": {"w": torch.ones(3)}, "history": [[1, 0.5]]})
        seeds.append(path.read_bytes())
        shard = Path(tmp) / "shard.safetensors"
        n = 2
        write_shard(shard, np.zeros((n, 8, 8, 3), np.uint8), np.zeros((n, 8, 8), bool), np.zeros((n, 4), np.float32),
                    np.zeros(n, np.int64), np.arange(n))
        seeds.append(shard.read_bytes())
    return seeds


def _run_safetensors(data: bytes, folder: Path) -> None:
    from saliency.core.checkpoint import load_checkpoint
    from saliency.shards import read_shard

    path = folder / "checkpoint.safetensors"
    path.write_bytes(data)
    try:
        load_checkpoint(path)
    except UserError:
        pass
    shard = read_shard(path, 8, 8)
    assert shard.masks.shape[1:] == (8, 8)


# --------------------------------------------------------------------------------- zips
def _zip_seeds() -> list[bytes]:
    seeds = []
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as handle:
            handle.writestr("images/", b"")
            handle.writestr("images/0001.jpg", b"jpeg bytes " * 40)
            handle.writestr("images/0002.jpg", b"more bytes " * 30)
        seeds.append(buffer.getvalue())
    return seeds


def _run_zip(data: bytes, folder: Path) -> None:
    from saliency.downloads.transfer import safe_extract_zip

    archive = folder / "images.zip"
    archive.write_bytes(data)
    target = folder / "out"
    target.mkdir(exist_ok=True)
    try:
        extracted = safe_extract_zip(archive, target, max_bytes=1 << 20, max_members=64)
    except UserError:
        return
    assert all(path.resolve().is_relative_to(target.resolve()) for path in extracted)


# -------------------------------------------------------------------- PyTorch .pth files
def _pth_seeds() -> list[bytes]:
    seeds = []
    for state in ({"weight": torch.ones(2, 2), "bias": torch.zeros(2)},
                  {"state_dict": {"layer.weight": torch.ones(3)}, "step": 10}):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        seeds.append(buffer.getvalue())
    return seeds


def _run_pth(data: bytes, folder: Path) -> None:
    from saliency.core.weights import load_state_dict_strict, load_torch_weights

    path = folder / "weights.pth"
    path.write_bytes(data)
    state = load_torch_weights(path, "fuzzed weights")
    load_state_dict_strict(torch.nn.Linear(2, 2), state, path, "fuzzed weights")


# ------------------------------------------------------------------------ TFLite flatbuffer
def _tflite_seeds() -> list[bytes]:
    path = None if SHARED is None else SHARED / "weights" / "mobilenet_v2_1.0_224_quant.tflite"
    return [path.read_bytes()] if path is not None and path.is_file() else []


def _tflite_tables(data: bytes) -> list[tuple[int, int]]:
    """The flatbuffer's tables and vectors: every byte outside the large weight buffers."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    bulk = []
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer.DataLength() > 256:
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            bulk.append((start, start + buffer.DataLength()))
    ranges, at = [], 0
    for start, end in sorted(bulk):
        if start > at:
            ranges.append((at, start))
        at = max(at, end)
    return ranges + ([(at, len(data))] if at < len(data) else [])


def _run_tflite(data: bytes, folder: Path) -> None:
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite

    path = folder / "mobilenet.tflite"
    path.write_bytes(data)
    state = convert_mobilenet_v2_tflite(path)
    assert all(isinstance(value, torch.Tensor) for value in state.values())


# ------------------------------------------------- the reference code's run folders (import-run)
def _reference_seeds() -> list[bytes]:
    """A run folder of the paper's reference code, packed as one input: a JSON line with
    ``args.json`` and ``human_annotation.txt``, then ``models/deformator_STEP.pt`` (its ortho,
    proj and linear layouts)."""
    generator = torch.Generator().manual_seed(0)
    layouts = {"ortho": {"log_mat_half": torch.randn(6, 6, generator=generator)},
               "proj": {"linear.weight": torch.randn(6, 4, generator=generator)},
               "linear": {"linear.weight": torch.randn(6, 4, generator=generator),
                          "linear.bias": torch.randn(6, generator=generator)}}
    seeds = []
    for kind, state in layouts.items():
        header = {"args": {"gan_type": "SN_MNIST", "deformator": kind, "directions_count": 4},
                  "annotation": "0: thickness\n2: background removal\n"}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        seeds.append(json.dumps(header).encode() + b"\n" + buffer.getvalue())
    return seeds


def _run_reference(data: bytes, folder: Path) -> None:
    from pipelines.import_run import import_run

    head, _, weights = data.partition(b"\n")
    source = folder / "reference-run"
    (source / "models").mkdir(parents=True, exist_ok=True)
    try:
        header = json.loads(head)
        args, annotation = header["args"], header["annotation"]
        (source / "args.json").write_text(json.dumps(args), encoding="utf-8")
        (source / "human_annotation.txt").write_text(str(annotation), encoding="utf-8")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        (source / "args.json").write_bytes(head)  # the broken line fuzzes args.json itself
    (source / "models" / "deformator_100.pt").write_bytes(weights)
    summary = import_run(source, folder / "imported", latent_dim=6)
    assert summary["generator"]


# ---------------------------------------------------------------------- command-line options
def _cli_commands() -> list[tuple[str, str]]:
    import click

    from pipelines.cli import cli

    return [(name, param.name) for name, command in sorted(cli.commands.items()) for param in command.params
            if isinstance(param, (click.Option, click.Argument)) and param.name not in ("help",)]


_CLI_TEXT = (st.text(max_size=24) | st.sampled_from(["", "-1", "0", "1e309", "nan", "-inf", "99999999999999999999999",
                                                       "0x10", "1,2,,3", "a:b", "3:-0", "-", "--", "..", "/", "~",
                                                       "\x00", "file:///etc/passwd", "os:system", "x" * 300])
             | st.integers(-(1 << 70), 1 << 70).map(str) | st.floats().map(str))


@st.composite
def _cli_structured(draw) -> bytes:
    command, option = draw(st.sampled_from(_cli_commands()))
    return json.dumps({"command": command, "option": option, "text": draw(_CLI_TEXT)}).encode()


def _cli_seeds() -> list[bytes]:
    return [json.dumps({"command": command, "option": option, "text": "1"}).encode()
            for command, option in _cli_commands()[:40]]


class _Reached(BaseException):
    """The command got past its options to its work (a progress bar, a network connection)."""


def _run_cli(data: bytes, folder: Path) -> None:
    """One option of one command given the fuzzed text, the command's other required values
    pointing at an empty folder, through the real ``main`` (its one-line error mapping). A
    command that reaches its work (its first progress bar, a network connection) has accepted
    the text: that ends the input as a value."""
    import contextlib

    import click

    from pipelines.cli import cli, main

    try:
        wanted = json.loads(data)
        command_name, option_name, text = wanted["command"], wanted["option"], str(wanted["text"])
        command = cli.commands[command_name]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        command_name, option_name, text = "sample", "seed", data.decode("utf-8", errors="replace")
        command = cli.commands["sample"]
    empty = folder / "empty"
    empty.mkdir(exist_ok=True)
    argv = [command_name]
    for param in command.params:
        value = text if param.name == option_name else None
        if value is None and not param.required:
            continue
        if value is None:
            value = str(folder / "out") if param.name in ("out", "run_dir") else str(empty)
            if param.name in ("count",):
                value = "2"
            if param.name in ("names", "dataset") and isinstance(param, click.Argument):
                value = "ecssd" if param.name == "dataset" else "mobilenet_v2"
        if isinstance(param, click.Argument):
            argv.append(value)
        elif param.is_flag:
            argv.append(param.opts[0])
        else:
            argv += [param.opts[0], value]
    # in the folder: a relative path in the text (an --out of "0", say) is the user's to write
    with _stopped_at_work(), _working_in(folder), contextlib.redirect_stderr(io.StringIO()) as errors, \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except _Reached:
            return
    lines = errors.getvalue().strip().splitlines()
    assert code in (0, 1, 2, 130) and len(lines) <= 1, f"exit {code}, stderr {errors.getvalue()[-400:]!r}"


@contextmanager
def _working_in(folder: Path):
    """contextlib.chdir, which Python 3.10 lacks."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def _stopped_at_work():
    import socket
    import sys

    import saliency.core.progress as progress

    def reached(*args, **kwargs):
        raise _Reached

    patched = [(progress, "progress_bar", progress.progress_bar)]
    for module in list(sys.modules.values()):  # the module's own names: getattr would wake lazy modules
        if getattr(module, "__dict__", {}).get("progress_bar") is progress.progress_bar and module is not progress:
            patched.append((module, "progress_bar", module.progress_bar))
    patched += [(socket, "create_connection", socket.create_connection), (socket.socket, "connect", socket.socket.connect)]
    for owner, name, _ in patched:
        setattr(owner, name, reached)
    try:
        yield
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)


FAMILIES = {family.name: family for family in (
    Family("images", _image_seeds, _run_image, hot=lambda seed: [(0, min(len(seed), 512))]),
    Family("json", _json_seeds, _run_json, _json_structured),
    Family("safetensors", _safetensors_seeds, _run_safetensors),
    Family("zip", _zip_seeds, _run_zip),
    Family("pth", _pth_seeds, _run_pth),
    Family("tflite", _tflite_seeds, _run_tflite, hot=_tflite_tables),
    Family("reference-runs", _reference_seeds, _run_reference),
    Family("cli", _cli_seeds, _run_cli, _cli_structured),
)}
