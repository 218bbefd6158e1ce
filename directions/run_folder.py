"""A discovery run's folder on disk: what stage 1 writes and every later stage reads.

    RUN/directions.safetensors  the K directions (d x K), and h_bg with its magnitude
    RUN/directions.json         the summary, written last: its presence marks a finished run
    RUN/config.json             the settings the run used (checked on --resume)
    RUN/report.md               the summary for people

``load_run`` reads a finished run; ``write_known_direction_run`` writes a folder that holds
one h_bg found elsewhere (a paper, another tool, a generator's ground truth).
"""

from __future__ import annotations

from pathlib import Path

import torch

from saliency.core.artifacts import atomic_path, ensure_writable_dir, write_json, write_safetensors
from saliency.core.errors import UserError
from saliency.core.json_files import read_json
from saliency.core.recorded_paths import recorded_options

SUMMARY_NAME = "directions.json"
# What later stages read of directions.json (saliency/core/json_files.py's notation).
SUMMARY_SHAPE = {"generator": str, "generator_options?": (dict, None), "latent_dim?": int, "num_directions?": int,
                 "bg_direction?": ({"magnitude": float, "threshold?": float, "index?": (int, str),
                                    "sign?": int, "vector?": [float]}, None)}
TENSORS_NAME = "directions.safetensors"
CONFIG_NAME = "config.json"


def describe_spans(spans: list[dict], last_step: int) -> str:
    """"cpu bf16 for steps 0-51,000; cpu fp32 for 51,000-55,000": how each stretch was played."""
    ends = [span["from_step"] for span in spans[1:]] + [last_step]
    return "; ".join(" ".join(filter(None, (span["device"] or "unrecorded", span["precision"])))
                     + f" for steps {span['from_step']:,}-{end:,}" for span, end in zip(spans, ends))


def _timing(summary: dict) -> str:
    """"300 s training, 320 s in all"; a resumed run's training counts every process, its
    command only its own stretch, so the two are named apart."""
    if summary.get("resumed_from"):
        return (f"{summary['train_seconds']:.0f} s training in all; this command, resumed at step "
                f"{summary['resumed_from']:,}, {summary['seconds']:.0f} s")
    return f"{summary['train_seconds']:.0f} s training, {summary['seconds']:.0f} s in all"


def report_markdown(summary: dict) -> str:
    """A human-readable page for a finished run: RCA, h_bg, and the ground-truth tables."""
    bg_dir = summary["bg_direction"]
    lines = [
        f"# Discovery run: {summary['generator']}",
        "",
        f"- {summary['num_directions']} directions, {summary['deformator']} deformator, {summary['reconstructor']} "
        f"reconstructor, batch {summary['batch_size']}, {summary['steps']} steps ({_timing(summary)}, {summary['device']}"
        f"{', ' + summary['precision'] if summary.get('precision') else ''})",
        f"- RCA (reconstructor accuracy on {summary['rca_samples']} fresh samples): **{summary['rca']:.3f}**",
    ]
    spans = summary.get("spans") or []
    if len(spans) > 1:  # resumed on another device or at another precision
        lines.append("- played: " + describe_spans(spans, summary["steps"]))
    curve = summary.get("rca_curve")
    if curve:
        lines.append("- RCA during the run: " + ", ".join(f"{rca:.3f} (step {step})" for step, rca in curve))
    if summary.get("stopped_early"):
        stop = summary["stopped_early"]
        lines.append(f"- stopped early at step {stop['step']}: {stop['rule']}")
    effects = summary.get("effects")
    if effects:
        lines.append(f"- image-space effects (shift {effects['shift']:g}, {effects['samples']} samples): mean |cos| "
                     f"between directions {effects['mean_abs_cos']:.3f}; diversity {effects['diversity']:.3f} "
                     f"(min {effects['diversity_min']:.3f}; collapsed {effects['collapsed_fraction']:.3f})")
    if bg_dir:
        lines.append(f"- h_bg: direction {bg_dir['index']}, sign {bg_dir['sign']:+d}, magnitude {bg_dir['magnitude']:g}; "
                     f"score {bg_dir['score']:.3f} (whitened {bg_dir['turned']:.3f} of the image, kept area "
                     f"{bg_dir['kept_area']:.3f}, change in the kept part {bg_dir['change']:.4f})")
    else:
        lines.append("- h_bg: not searched (--no-bg-search, or the generator's profile)")
    truth = summary.get("ground_truth")
    if truth:
        b = truth["background"]
        lines += [
            f"- ground truth: bg_cos {b['bg_cos']:.3f}, bg_mask_iou {b['bg_mask_iou']:.3f}, "
            f"oracle_mask_iou {b['oracle_mask_iou']:.3f} (true whiteness direction, magnitude {b['oracle_magnitude']:g})",
            "",
            "| direction | moves most | cos | purity | then |",
            "|---:|---|---:|---:|---|",
        ]
        for row in truth["factors"]:
            then = ", ".join(f"{name} ({cos:+.2f})" for name, cos in row["runners_up"])
            lines.append(f"| {row['direction']} | {row['factor']} | {row['cos']:+.2f} | {row['purity']:.2f} | {then} |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, summary: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(report_markdown(summary), encoding="utf-8")


def load_run(run_dir: str | Path) -> dict:
    """Read a finished discovery run's summary (used by later stages)."""
    path = Path(run_dir) / SUMMARY_NAME
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished discovery run (no {SUMMARY_NAME})")
    return read_json(path, SUMMARY_SHAPE)


def write_known_direction_run(out: str | Path, generator: str, direction: torch.Tensor, magnitude: float,
                              generator_options: dict | None = None, threshold: float = 0.95,
                              note: str = "known direction") -> Path:
    """A run folder holding one h_bg found elsewhere (a paper, another tool, a generator's
    ground truth), in the format later stages read; no training happens.

    Tests and benchmarks use it to feed synthesis a known direction.
    """
    out = ensure_writable_dir(out)
    vector = direction.detach().float().cpu().flatten()
    vector = vector / vector.norm()
    write_safetensors(out / TENSORS_NAME, {"directions": vector[:, None].clone(), "bg_direction": vector.clone()},
                  {"generator": generator, "bg_magnitude": float(magnitude)})
    write_json(out / SUMMARY_NAME, {
        "generator": generator,
        "generator_options": recorded_options(generator_options or {}, out),  # weights relative to the run
        "latent_dim": int(vector.numel()),
        "num_directions": 1,
        "bg_direction": {"index": 0, "sign": 1, "magnitude": float(magnitude), "threshold": threshold,
                         "reliable": True, "vector": [round(float(v), 6) for v in vector],
                         "extra": {"chosen_by": note}},
    })
    return out
