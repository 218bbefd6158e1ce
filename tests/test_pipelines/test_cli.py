"""The `saliency` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "sample" in result.stdout and "generators" in result.stdout
    result = run_cli("sample", "--help")
    assert result.returncode == 0
    for option in ("--generator", "--n", "--out", "--classes", "--seed", "--device"):
        assert option in result.stdout


def test_sample_writes_a_grid_of_the_requested_size(tmp_path):
    out = tmp_path / "nested" / "grid.png"
    result = run_cli("sample", "--generator", "scenes", "--n", "6", "--nrow", "3",
                     "--resolution", "32", "--out", str(out), "--classes", "0,4", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    picture = Image.open(out)
    assert picture.size == (3 * 34 + 2, 2 * 34 + 2)  # 2 px padding around each tile
    assert picture.mode == "RGB"
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    assert out.stat().st_mode & 0o044  # readable by others under the usual umask, not 0600


def test_sample_is_deterministic_for_a_seed(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6)):
        assert run_cli("sample", "--n", "4", "--resolution", "32", "--seed", str(seed),
                       "--out", str(path)).returncode == 0
    read = [np.asarray(Image.open(p)) for p in paths]
    assert np.array_equal(read[0], read[1])
    assert not np.array_equal(read[0], read[2])


def test_generators_lists_the_registry():
    result = run_cli("generators")
    assert result.returncode == 0
    for name in ("scenes", "biggan-deep-128", "dcgan-faces"):
        assert name in result.stdout


def test_a_nul_in_an_argument_is_one_line_not_a_traceback(tmp_path, capsys):
    """Found by the long fuzz run (cli family): click's path check raised ValueError on a NUL.
    A shell cannot pass one (execve refuses it), so the case lives here, not in the matrix."""
    from pipelines.cli import main

    for argv in (["import-run", "a\x00b", "--out", str(tmp_path / "out")],
                 ["predict", "a\x00b", "--model", str(tmp_path), "--out", str(tmp_path / "o")]):
        code = main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("saliency: error:"), (argv, lines)
        assert "NUL" in lines[0] or "\\x00" in lines[0]
