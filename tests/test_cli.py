"""The `saliency` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import assert_one_line_error, run_cli


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


def test_bad_inputs_end_in_one_line_and_a_nonzero_exit(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad_weights = tmp_path / "weights.tar"
    bad_weights.write_bytes(b"not a checkpoint")
    cases = [
        (("sample", "--generator", "nope", "--out", str(tmp_path / "x.png")), "unknown generator"),
        (("sample", "--n", "0", "--out", str(tmp_path / "x.png")), "--n"),
        (("sample", "--n", "-3", "--out", str(tmp_path / "x.png")), "--n"),
        (("sample", "--out", str(a_file / "x.png")), str(a_file)),
        (("sample", "--out", str(tmp_path / "x.jpg")), ".png"),
        (("sample", "--classes", "0,99", "--out", str(tmp_path / "x.png")), "out of range"),
        (("sample", "--classes", "zero", "--out", str(tmp_path / "x.png")), "integers"),
        (("sample", "--device", "quantum", "--out", str(tmp_path / "x.png")), "device"),
        (("sample", "--resolution", "4", "--out", str(tmp_path / "x.png")), "--resolution"),
        (("sample", "--truncation", "0.5", "--out", str(tmp_path / "x.png")), "--truncation"),
        (("sample", "--n", "many", "--out", str(tmp_path / "x.png")), "--n"),
        (("sample",), "--out"),
        (("sample", "--generator", "biggan-deep-128", "--out", str(tmp_path / "x.png")), "--weights DIR"),
        (("sample", "--generator", "dcgan-faces", "--weights", str(bad_weights),
          "--out", str(tmp_path / "x.png")), str(bad_weights)),
        (("no-such-command",), "no-such-command"),
        (("sample", "--generator", ":nothing", "--out", str(tmp_path / "x.png")), "cannot import"),
    ]
    for args, needle in cases:
        result = run_cli(*args, env={"HF_HUB_CACHE": str(tmp_path / "empty-hub")})
        assert_one_line_error(result, needle)
    assert not (tmp_path / "x.png").exists()
