"""``saliency import-run``: a run of the paper's reference code as a discovery run of ours.

The reference code (GANLatentDiscovery) saves a run as a folder with ``args.json`` (its
command-line arguments: ``gan_type``, ``deformator``, ``directions_count``, ...), an optional
``human_annotation.txt`` (``INDEX: name`` lines) and ``models/deformator_STEP.pt``, the
deformator's plain state dict. Its linear deformators map a shift ``eps * e_k`` to a latent
shift, so column k of their matrix is direction k:

- ``ortho``: ``log_mat_half`` S (d x d); A = expm(S - S^T), all d columns.
- ``proj``: ``linear.weight`` (d x K), each column used at unit length.
- ``linear``: ``linear.weight`` (d x K), columns at their own length (folded into magnitudes).
- ``id``: the identity.

``random`` (its matrix is not saved) and ``fc`` (not linear) cannot be imported. A bias in
``linear`` / ``proj`` (a constant offset the reference adds to every shift) is dropped, and
its size relative to the columns is reported.

The result holds ``directions.safetensors`` (unit columns, h_bg) and ``directions.json``, the
files ``saliency synthesize`` reads. h_bg: ``--bg-direction INDEX:MAGNITUDE`` (a negative
magnitude flips the direction; the reference saliency code shifts by 26), else the direction
the run's ``human_annotation.txt`` names as background removal.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from directions.background import BackgroundCriterion, parse_bg_direction
from saliency.core.weights import load_torch_weights
from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, write_json, write_safetensors
from saliency.core.errors import ConfigError, UserError
from saliency.core.recorded_paths import record_path

REFERENCE_SHIFT = 26.0  # the reference code's shift along h_bg for saliency masks
GENERATORS = {"BigGAN": "biggan-128", "ProgGAN": "proggan-celebahq", "SN_MNIST": "sngan-mnist",
              "Anime_64": "sngan-anime", "StyleGAN2": "stylegan2"}
ANNOTATION_FILE = "human_annotation.txt"
# Tried in this order, each over every line: an exact name before a mere mention of "background"
# (which could be "background blur").
BACKGROUND_NAMES = ("background removal", "background_removal", "remove background", "no background")


def _read_args(folder: Path) -> dict:
    from saliency.core.json_files import read_json

    return read_json(folder / "args.json", {"deformator?": str, "gan_type?": str},
                     missing=f"{folder} is not a run of the reference code (no args.json)")


def deformator_file(folder: Path, step: int | None) -> tuple[Path, int]:
    """``models/deformator_STEP.pt``: the given step, else the latest."""
    models = folder / "models"
    steps = sorted(int(m.group(1)) for m in (re.fullmatch(r"deformator_(\d+)\.pt", p.name)
                                             for p in (models.iterdir() if models.is_dir() else [])) if m)
    if not steps:
        raise UserError(f"{models} holds no deformator_STEP.pt")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise UserError(f"{models} has no deformator_{step}.pt (it has steps {', '.join(map(str, steps))})")
    return models / f"deformator_{step}.pt", step


def directions_from_state(kind: str, state: dict, latent_dim: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(unit directions d x K, their original lengths K, notes) for a reference deformator."""
    notes: dict = {}
    if kind == "ortho":
        if set(state) != {"log_mat_half"}:
            raise ValueError(f"an ortho deformator holds log_mat_half only, found {sorted(state)}")
        s = state["log_mat_half"].double()
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(f"log_mat_half must be square, got {tuple(s.shape)}")
        matrix = torch.linalg.matrix_exp(s - s.T)
    elif kind in ("proj", "linear"):
        if "linear.weight" not in state or set(state) - {"linear.weight", "linear.bias"}:
            raise ValueError(f"a {kind} deformator holds linear.weight (and linear.bias), found {sorted(state)}")
        matrix = state["linear.weight"].double()
        if matrix.ndim != 2:
            raise ValueError(f"linear.weight must be a matrix, got {tuple(matrix.shape)}")
        if "linear.bias" in state:
            bias = float(state["linear.bias"].double().norm())
            notes["dropped_bias_norm"] = round(bias, 6)
            notes["bias_over_median_column"] = round(bias / max(float(matrix.norm(dim=0).median()), 1e-12), 6)
    elif kind == "id":
        if latent_dim is None:
            raise ValueError("an id deformator has no weights: pass --latent-dim")
        matrix = torch.eye(latent_dim, dtype=torch.float64)
    elif kind == "random":
        raise ValueError("the reference code does not save a random deformator's matrix (it is not a parameter)")
    else:
        raise ValueError(f"deformator {kind!r} is not linear; only ortho, proj, linear and id can be imported")
    if latent_dim is not None and matrix.shape[0] != latent_dim:
        # As the reference deformator does: its output is zero-padded (or cut) to the latent size.
        notes["rows"] = f"{matrix.shape[0]} -> {latent_dim} ({'zero-padded' if matrix.shape[0] < latent_dim else 'cut'})"
        resized = torch.zeros(latent_dim, matrix.shape[1], dtype=matrix.dtype)
        rows = min(latent_dim, matrix.shape[0])
        resized[:rows] = matrix[:rows]
        matrix = resized
    lengths = matrix.norm(dim=0)
    if not torch.isfinite(matrix).all() or (lengths == 0).any():
        raise ValueError("a direction is zero or not finite")
    if kind == "proj":
        notes["lengths"] = "unit (proj normalises each shift)"
        lengths = torch.ones_like(lengths)
    return (matrix / matrix.norm(dim=0, keepdim=True)).float(), lengths.float(), notes


def annotated_background(folder: Path) -> tuple[int, str] | None:
    """The direction ``human_annotation.txt`` calls background removal, if any."""
    path = folder / ANNOTATION_FILE
    if not path.is_file():
        return None
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        index, sep, name = line.partition(":")
        if sep and index.strip().isdigit():
            entries.append((int(index), name.strip()))
    for wanted in BACKGROUND_NAMES:
        for index, name in entries:
            if name.lower().replace("_", " ") == wanted.replace("_", " "):
                return index, name
    for wanted in BACKGROUND_NAMES:
        for index, name in entries:
            if wanted.replace("_", " ") in name.lower().replace("_", " "):
                return index, name
    return None


def import_run(source: Path, out: Path, bg_direction: str | None = None, generator: str | None = None,
               step: int | None = None, weights: str | None = None, latent_dim: int | None = None) -> dict:
    from directions.run_folder import SUMMARY_NAME, TENSORS_NAME

    source = Path(source)
    refuse_output_in_inputs(out, {"SOURCE": source, "--weights": weights})
    args = _read_args(source)
    kind = str(args.get("deformator", "ortho"))
    gan_type = str(args.get("gan_type", ""))
    name = generator or next((ours for theirs, ours in GENERATORS.items() if gan_type.startswith(theirs)), None)
    if name is None:
        raise ConfigError(f"{source}: gan_type {gan_type!r} has no generator here; pass `generator` NAME")
    path, step = deformator_file(source, step)
    state = load_torch_weights(path, "import-run")
    if weights is not None:  # check the latent size against the generator the user will run
        from directions.generators import build_generator

        latent_dim = build_generator(name, device="cpu", weights=weights).latent_dim
    try:
        directions, lengths, notes = directions_from_state(kind, state, latent_dim)
    except (ValueError, KeyError, RuntimeError, AttributeError, TypeError, IndexError) as exc:
        raise UserError(f"cannot import {path}: {exc or type(exc).__name__}") from exc
    count = directions.shape[1]

    if bg_direction is not None:
        index, magnitude = parse_bg_direction(bg_direction, signed=True)  # a negative magnitude flips h_bg
        magnitude = REFERENCE_SHIFT if magnitude is None else magnitude
        chosen_by = "user"
    else:
        annotated = annotated_background(source)
        if annotated is None:
            raise ConfigError(f"{source} names no background direction in {ANNOTATION_FILE}: pass `bg_direction` INDEX[:MAGNITUDE]")
        index, magnitude, chosen_by = annotated[0], REFERENCE_SHIFT, f"{ANNOTATION_FILE}: {annotated[1]}"
    if index >= count:
        raise ConfigError(f"`bg_direction` {index}: the run has directions 0..{count - 1}")
    sign = 1 if magnitude > 0 else -1
    h_bg = sign * directions[:, index]
    scale = float(lengths[index])  # a linear deformator's column length multiplies the shift
    from directions.discovery import CHECKPOINT_NAME

    if (Path(out) / SUMMARY_NAME).exists() or (Path(out) / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{out} already holds a run; choose another `out`")
    out = ensure_writable_dir(out)
    write_safetensors(out / TENSORS_NAME, {"directions": directions.contiguous(), "bg_direction": h_bg.contiguous()},
                      {"generator": name, "bg_magnitude": abs(magnitude) * scale})
    # paths relative to the run folder, so that it can move with what it names
    options = {"weights": record_path(weights, out)} if weights else {}
    if name == "stylegan2":  # the reference shifted in W unless the run said otherwise
        options["latent_space"] = "w" if args.get("w_shift", True) else "z"
    summary = {
        "generator": name,
        "generator_options": options,
        "latent_dim": int(directions.shape[0]),
        "num_directions": count,
        "deformator": f"imported-{kind}",
        "imported_from": {"folder": record_path(source, out), "file": record_path(path, out), "step": step,
                          "gan_type": gan_type,
                          "deformator": kind, "target_class": args.get("target_class"), **notes},
        "bg_direction": {"index": index, "sign": sign, "magnitude": abs(magnitude) * scale,
                         "threshold": BackgroundCriterion().threshold,
                         "reliable": True, "extra": {"chosen_by": chosen_by, "reference_magnitude": magnitude}},
    }
    write_json(out / SUMMARY_NAME, summary)
    return summary
