"""Every option that sizes an allocation has a ceiling, shown in --help and checked before any work.

Table-driven from the CLI itself: each command's integer options are read off click, so an
option added later without a ceiling fails here, and every ceiling is tried one above its top.
"""

from __future__ import annotations

import click
import pytest

from conftest import assert_one_line_error, run_cli
from pipelines.cli import cli

# Options that size memory, disk or processes, by name: each must have an upper bound.
SIZING = {"--n", "--nrow", "--resolution", "--train-resolution", "--directions", "--steps", "--batch",
          "--refine-steps", "--bg-samples", "--rca-samples", "--top-k", "--shard-size", "--val-count", "--workers",
          "--size", "--images", "--pairs", "--unet-steps", "--discover-steps", "--latent-dim"}

# The required arguments of each command (values that parse; nothing behind them is ever read).
REQUIRED = {
    "sample": ["--out", "{tmp}/x.png"],
    "discover": ["--out", "{tmp}/out"],
    "synthesize": ["--run", "{tmp}/run", "--n", "5", "--out", "{tmp}/out"],
    "vote": ["--classifier", "scenes-shapes", "--out", "{tmp}/c.json"],
    "train-unet": ["--data", "{tmp}/data", "--out", "{tmp}/out"],
    "eval": ["--dataset", "ecssd", "--model", "{tmp}/m", "--out", "{tmp}/out"],
    "predict": ["{tmp}/a.jpg", "--model", "{tmp}/m", "--out", "{tmp}/out"],
    "pipeline": ["--out", "{tmp}/out"],
    "import-run": ["{tmp}/src", "--out", "{tmp}/out"],
    "export": ["--model", "{tmp}/m", "--out", "{tmp}/m.onnx"],
}


def _bounded_options():
    for name, command in sorted(cli.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, click.IntRange):
                yield name, max(param.opts, key=len), param


def test_every_sizing_option_of_every_command_has_a_ceiling():
    sizing = [(name, flag, param) for name, command in sorted(cli.commands.items()) for param in command.params
              if isinstance(param, click.Option) for flag in param.opts if flag in SIZING]
    assert len(sizing) >= 25  # the table is not empty: every command's sizing options are here
    unbounded = [f"{name} {flag}" for name, flag, param in sizing
                 if not isinstance(param.type, click.IntRange) or param.type.max is None]
    assert not unbounded, f"options that size an allocation but have no ceiling: {unbounded}"


CASES = [(name, flag, param.type.max) for name, flag, param in _bounded_options() if param.type.max is not None]


@pytest.mark.parametrize("command, flag, ceiling", CASES, ids=[f"{c}{f}" for c, f, _ in CASES])
def test_one_above_the_ceiling_is_one_line_before_any_work(tmp_path, command, flag, ceiling):
    args = [a.format(tmp=tmp_path) for a in REQUIRED.get(command, [])]
    result = run_cli(command, *args, flag, str(ceiling + 1))
    assert_one_line_error(result, flag, f"<={ceiling}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created
    help_text = run_cli(command, "--help").stdout
    assert f"<={ceiling}" in help_text.replace(" ", "").replace("\n", "")  # the range shows in --help
