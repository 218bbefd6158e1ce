"""``saliency sweep``: one discovery per grid cell, then a table and a chart of RCA.

    saliency sweep --generator sngan-mnist --out runs/k --vary directions=16,32,64,128 --seeds 0,1
    saliency sweep --generator sngan-mnist --out runs/t2 --vary deformator=unit,random,identity --steps 2000

A cell is an ordinary ``saliency discover`` run folder (``DIR/cells/KEY=VALUE,.../seed=S``),
so it resumes the way discover does: a finished cell (``directions.json``) is skipped, an
interrupted one continues from its checkpoint. Options that are not the sweep's own go to
every cell's discover unchanged. Under torchrun the cells are dealt out to the processes,
each running its cells as single-process discoveries on its own device; whichever process
finishes the last cell writes ``table.md``, ``table.csv``, ``cells.csv`` and ``rca.png``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable

import click

from saliency.core import distributed
from saliency.core.artifacts import atomic_path, ensure_writable_dir, write_json
from saliency.core.errors import UserError
from saliency.core.json_files import read_json
from saliency.core.recorded_paths import record_path, resolve_recorded

SPEC_NAME = "sweep.json"
CELLS_DIR = "cells"
SUMMARY_NAME = "directions.json"
NOT_VARIABLE = {"out", "resume", "seed"}  # seed: use --seeds
# Parameters that say where or how a cell runs, not what it computes: left out of the folder's spec.
NOT_IN_SPEC = {"out", "resume", "seed", "device"}


@dataclass
class SweepConfig:
    """``saliency sweep``'s own options; every other option is discover's, forwarded to each cell."""
    out: Path
    vary: tuple[str, ...] = ()  # KEY=V1,V2,... once for a line, twice for a grid
    seeds: list[int] = field(default_factory=lambda: [0])
    generator: str | None = None  # every cell's (default: discover's)
    device: str | None = None  # every cell's; under torchrun each process's own GPU
    plan: bool = False  # list the cells and their state, run nothing


@dataclass
class Axis:
    key: str  # the discover option's parameter name (num_directions, shift_loss_weight, ...)
    flag: str  # as the user wrote it, without dashes (directions, shift-loss-weight, ...)
    texts: list[str]  # the values as given
    values: list[Any]  # converted by the option's own type


@dataclass
class Cell:
    settings: dict[str, Any]  # key -> value, one per axis
    labels: dict[str, str]  # flag -> value text
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items()) + f",seed={self.seed}"


@dataclass
class SweepPlan:
    out: Path
    axes: list[Axis]
    seeds: list[int]
    base: dict[str, Any]  # discover's parameters shared by every cell
    forwarded: list[str]
    cells: list[Cell] = field(default_factory=list)


def _flag_name(key: str) -> str:
    return key.strip().lstrip("-").replace("_", "-").lower()


def _find_option(command, flag: str):
    """The discover option named ``flag`` (directions, shift-loss-weight, charts, ...)."""
    import click

    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if flag in [_flag_name(o) for o in param.secondary_opts]:  # --no-charts: its value would read inverted
            raise UserError(f"--vary {flag}: vary the positive name, e.g. {_flag_name(param.opts[0])}=true,false")
        if flag in [_flag_name(o) for o in param.opts] or flag == _flag_name(param.name):
            return param
    return None


def _parse_vary(command, ctx, text: str) -> Axis:
    flag, sep, rest = text.partition("=")
    flag = _flag_name(flag)
    if not sep or not flag or not rest.strip():
        raise UserError(f"--vary takes KEY=V1,V2,... (a discover option and its values), got {text!r}")
    param = _find_option(command, flag)
    if param is None:
        known = ", ".join(sorted(_flag_name(p.opts[0]) for p in command.params if getattr(p, "opts", None)
                                 and _flag_name(p.name) not in NOT_VARIABLE))
        raise UserError(f"--vary {flag}: discover has no option --{flag}; options that can vary: {known}")
    if param.name in NOT_VARIABLE:
        hint = " (use --seeds)" if param.name == "seed" else ""
        raise UserError(f"--vary {flag}: this option cannot be varied{hint}")
    texts = [part.strip() for part in rest.split(",") if part.strip()]
    if len(set(texts)) != len(texts):
        raise UserError(f"--vary {flag}: a value is listed twice")
    values = []
    for value in texts:
        try:
            values.append(param.type_cast_value(ctx, value))
        except Exception as exc:  # click's own message says what is wrong with the value
            message = getattr(exc, "message", None) or str(exc)
            raise UserError(f"--vary {flag}={value}: {message}") from exc
    return Axis(key=param.name, flag=flag, texts=texts, values=values)


def _cell_folder_name(labels: dict[str, str], seed: int) -> str:
    parts = [f"{k}={v}" for k, v in labels.items()] + [f"seed={seed}"]
    return re.sub(r"[^A-Za-z0-9=.,_+-]", "_", ",".join(parts))


def plan_sweep(out: Path, vary: list[str], seeds: list[int], forwarded: list[str], generator: str | None,
               discover: click.Command) -> SweepPlan:
    """Check every cell's options before any work: a bad one is one error line, nothing written.
    ``discover`` is the CLI's discover command, whose options (types, ranges, defaults) every
    cell takes: the CLI passes it in, so this module does not import the CLI that imports it."""
    from directions.generators.registry import get_factory
    from pipelines.discover import DiscoverConfig
    from pipelines.options import config_from

    if not vary:
        raise UserError("--vary is required: KEY=V1,V2,... (one or two of them)")
    if len(vary) > 2:
        raise UserError(f"--vary takes one or two keys (a line or a grid), got {len(vary)}")
    if not seeds:
        raise UserError("--seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise UserError("--seeds lists a seed twice")
    args = list(forwarded)
    if any(a.split("=")[0] in ("--out", "--resume", "--seed") for a in args):
        raise UserError("sweep sets each cell's --out, --resume and --seed itself; use --seeds for seeds")
    if generator is not None:
        args = ["--generator", generator] + args
    try:
        ctx = discover.make_context("discover", args + ["--out", str(out / CELLS_DIR)], resilient_parsing=False)
    except Exception as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)  # click's own words
        raise UserError(f"options for discover: {message}") from exc
    axes = [_parse_vary(discover, ctx, text) for text in vary]
    if len({a.key for a in axes}) != len(axes):
        raise UserError("--vary names the same option twice")
    fixed = {a.key for a in axes} & {p.name for p in discover.params if _given(ctx, p.name)}
    if fixed:
        raise UserError(f"--vary {', '.join(sorted(fixed))}: also given as a fixed option")
    plan = SweepPlan(out=out, axes=axes, seeds=list(seeds), base=dict(ctx.params), forwarded=args)
    for combo in product(*[list(zip(a.texts, a.values)) for a in axes]):
        labels = {a.flag: text for a, (text, _) in zip(axes, combo)}
        settings = {a.key: value for a, (_, value) in zip(axes, combo)}
        config = config_from(DiscoverConfig, {**plan.base, **settings})
        config.validate()  # the checks discover makes before it writes anything
        get_factory(config.generator)  # an unknown generator is refused here, not in the first cell
        for seed in seeds:
            folder = out / CELLS_DIR / _cell_folder_name(labels, seed)
            plan.cells.append(Cell(settings=settings, labels=labels, seed=seed, folder=folder))
    return plan


def spec_of(plan: SweepPlan) -> dict:
    """What every cell of a folder shares: discover's resolved options, but for the varied ones
    and those that only say where or how a cell runs."""
    varied = {a.key for a in plan.axes}
    return {k: (record_path(v, plan.out) if k in PATH_OPTIONS and v else str(v) if isinstance(v, Path) else v)
            for k, v in sorted(plan.base.items()) if k not in NOT_IN_SPEC and k not in varied}


PATH_OPTIONS = {"weights"}  # discover's options that name a file: recorded relative to the sweep folder


def _same_option(plan: SweepPlan, key: str, saved, now) -> bool:
    if key in PATH_OPTIONS and isinstance(saved, str) and isinstance(now, str) and saved and now:
        return (os.path.abspath(resolve_recorded(saved, plan.out))  # relative to the folder, or absolute
                == os.path.abspath(resolve_recorded(now, plan.out)))
    return saved == now


def recorded_arguments(plan: SweepPlan) -> list[str]:
    """discover's options as given, a file they name as the sweep folder records it."""
    flags = {f"--{key}" for key in PATH_OPTIONS}
    recorded, names_a_file = [], False
    for arg in plan.forwarded:
        flag, equals, value = arg.partition("=")
        if names_a_file:
            arg = record_path(arg, plan.out)
        elif flag in flags and equals:
            arg = f"{flag}={record_path(value, plan.out)}"
        names_a_file = arg in flags
        recorded.append(arg)
    return recorded


def _given(ctx, name: str) -> bool:
    import click

    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def cell_state(cell: Cell) -> str:
    """finished, interrupted (a checkpoint to resume from) or new."""
    from directions.discovery import CHECKPOINT_NAME

    if (cell.folder / SUMMARY_NAME).is_file():
        return "finished"
    if (cell.folder / CHECKPOINT_NAME).is_file():
        return "interrupted"
    return "new"


def _check_spec(plan: SweepPlan) -> dict:
    """The fixed options of a folder's sweep never change (the grid may grow, and the device
    may differ); a difference is named."""
    path = plan.out / SPEC_NAME
    spec = spec_of(plan)
    if path.is_file():
        saved = read_json(path, {"options?": dict}).get("options", {})
        varied = {a.key for a in plan.axes}
        differs = sorted(k for k in set(saved) | set(spec)
                         if k not in varied and not _same_option(plan, k, saved.get(k), spec.get(k)))
        if differs:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {spec.get(k)!r} now" for k in differs)
            raise UserError(f"{plan.out} holds a sweep with other fixed options ({detail}): use another --out")
    return spec


def run_cell(cell: Cell, plan: SweepPlan, device: str, progress: bool) -> dict:
    from pipelines.discover import DiscoverConfig, run_discover
    from pipelines.options import config_from
    from directions.run_folder import load_run

    state = cell_state(cell)
    if state == "finished":
        return load_run(cell.folder)
    params = {**plan.base, **cell.settings, "seed": cell.seed, "out": cell.folder, "resume": state == "interrupted"}
    if device is not None:
        params["device"] = device
    config = config_from(DiscoverConfig, params)
    config.progress = progress
    with distributed.single_process():
        return run_discover(config)


def sweep(config: SweepConfig, forwarded: list[str], discover: click.Command,
          log: Callable[[str], None] = print) -> dict:
    """Check every cell, then list them (``plan``) or run them; ``forwarded`` are the command
    line's other options, for discover (the CLI's command, which knows their types)."""
    plan = plan_sweep(config.out, list(config.vary), config.seeds, forwarded, config.generator, discover)
    if config.plan:
        return {"listing": [(cell_state(cell), cell.folder) for cell in plan.cells], "finished": False}
    return run_sweep(plan, device=config.device, log=log)


def run_sweep(plan: SweepPlan, device: str | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Run the cells this process owns, then (if every cell is finished) write the table."""
    rank, world, local_rank = distributed.launch_ranks()
    out = ensure_writable_dir(plan.out)
    spec = _check_spec(plan)
    if rank == 0:
        write_json(out / SPEC_NAME, {"options": spec, "forwarded": recorded_arguments(plan),
                                     "latest_grid": {a.flag: a.texts for a in plan.axes}, "seeds": plan.seeds})
    if world > 1:
        spec = device or "auto"
        mapped = distributed.device_for(spec, distributed.Context(rank, world, local_rank))
        if mapped != spec:  # this process's own GPU
            import torch

            torch.cuda.set_device(local_rank)  # nothing of this process lands on GPU 0 by default
            device = mapped
    mine = [cell for i, cell in enumerate(plan.cells) if i % world == rank]
    started = time.perf_counter()
    for number, cell in enumerate(mine, 1):
        state = cell_state(cell)
        verb = {"finished": "done already", "interrupted": "resuming", "new": "starting"}[state]
        log(f"[{number}/{len(mine)}{f' on rank {rank}' if world > 1 else ''}] {cell.name}: {verb}")
        summary = run_cell(cell, plan, device, progress)
        if state != "finished":
            log(f"    RCA {summary['rca']:.3f} ({summary['steps']} steps, {summary['train_seconds']:.0f} s)")
    pending = [cell.name for cell in plan.cells if cell_state(cell) != "finished"]
    if pending:
        log(f"{len(plan.cells) - len(pending)} of {len(plan.cells)} cells finished; the process that finishes the "
            f"last one writes the table")
        return {"finished": False, "pending": pending, "seconds": time.perf_counter() - started}
    tables = write_tables(plan)
    return {"finished": True, **tables, "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------------- tables
def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def collect(plan: SweepPlan) -> tuple[list[dict], list[dict]]:
    """(one row per cell, one row per setting aggregated over seeds)."""
    from directions.run_folder import load_run

    cells, groups = [], {}
    for cell in plan.cells:
        summary = load_run(cell.folder)
        effects = summary.get("effects") or {}
        # measured columns have underscores, option names dashes: they never collide
        measured = {"seed": cell.seed, "rca": summary["rca"], "steps_done": summary["steps"],
                    "batch_size": summary.get("batch_size"), "num_directions": summary.get("num_directions"),
                    "mean_abs_cos": effects.get("mean_abs_cos"), "diversity": effects.get("diversity"),
                    "collapsed_fraction": effects.get("collapsed_fraction"),
                    "train_seconds": summary.get("train_seconds"), "folder": record_path(cell.folder, plan.out)}
        cells.append({**cell.labels, **measured})
        groups.setdefault(tuple(cell.labels[a.flag] for a in plan.axes), []).append(measured)
    settings = []
    for key, rows in groups.items():
        rca = [r["rca"] for r in rows]

        def mean_of(name: str) -> float | None:
            values = [r[name] for r in rows if r[name] is not None]
            return statistics.fmean(values) if values else None

        settings.append({**{a.flag: v for a, v in zip(plan.axes, key)}, "seeds": len(rows),
                         "rca_mean": statistics.fmean(rca), "rca_std": statistics.pstdev(rca) if len(rca) > 1 else 0.0,
                         "rca_min": min(rca), "rca_max": max(rca), "mean_abs_cos": mean_of("mean_abs_cos"),
                         "diversity": mean_of("diversity"), "collapsed_fraction": mean_of("collapsed_fraction"),
                         "train_seconds": mean_of("train_seconds")})
    return cells, settings


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def markdown_table(plan: SweepPlan, settings: list[dict]) -> str:
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''}"
    entry = lambda s: (f"{s['rca_mean']:.3f}" + (f" ± {s['rca_std']:.3f}" if s["seeds"] > 1 else ""))  # noqa: E731
    lines = [f"RCA ({'mean ± std over ' + seeds if len(plan.seeds) > 1 else seeds}); discover options: "
             f"`{' '.join(recorded_arguments(plan)) or '(defaults)'}`", ""]
    by_key = {tuple(s[a.flag] for a in plan.axes): s for s in settings}
    first = plan.axes[0]
    if len(plan.axes) == 1:
        lines += [f"| {first.flag} | RCA | mean abs cos | diversity | collapsed | train s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for text in first.texts:
            s = by_key[(text,)]
            lines.append(f"| {text} | {entry(s)} | {_fmt(s['mean_abs_cos'])} | {_fmt(s['diversity'])} | "
                         f"{_fmt(s['collapsed_fraction'], 2)} | {_fmt(s['train_seconds'], 0)} |")
    else:
        second = plan.axes[1]
        lines += [f"| {first.flag} \\ {second.flag} | " + " | ".join(second.texts) + " |",
                  "|---|" + "---:|" * len(second.texts)]
        for text in first.texts:
            lines.append(f"| {text} | " + " | ".join(entry(by_key[(text, other)]) for other in second.texts) + " |")
    return "\n".join(lines) + "\n"


def _chart(plan: SweepPlan, settings: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = plan.axes[0]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in first.values)
    xs = list(first.values) if numeric else list(range(len(first.texts)))
    by_key = {tuple(s[a.flag] for a in plan.axes): s for s in settings}
    series = [(None, [(t,) for t in first.texts])] if len(plan.axes) == 1 else [
        (other, [(t, other) for t in first.texts]) for other in plan.axes[1].texts]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for label, keys in series:
        rows = [by_key[k] for k in keys]
        means = [r["rca_mean"] for r in rows]
        low = [m - r["rca_min"] for m, r in zip(means, rows)]
        high = [r["rca_max"] - m for m, r in zip(means, rows)]
        axis.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4,
                      label=None if label is None else f"{plan.axes[1].flag}={label}")
    if numeric and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8:
        axis.set_xscale("log", base=2)
    axis.set_xticks(xs)
    axis.set_xticklabels(first.texts)
    axis.set_xlabel(first.flag)
    axis.set_ylabel("RCA" + (" (bars: min to max over seeds)" if len(plan.seeds) > 1 else ""))
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_tables(plan: SweepPlan) -> dict:
    cells, settings = collect(plan)
    table = markdown_table(plan, settings)
    for name, text in (("table.md", table), ("table.csv", _csv_text(settings)), ("cells.csv", _csv_text(cells))):
        with atomic_path(plan.out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    _chart(plan, settings, plan.out / "rca.png")
    return {"table": table, "cells": cells, "settings": settings}
