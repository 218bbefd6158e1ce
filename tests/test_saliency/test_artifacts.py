"""atomic_path: a file is replaced whole or not at all, and no temporary is left behind."""

import os
import stat

import pytest

from saliency.core.artifacts import atomic_path, remove_stale_temporaries, write_json
from saliency.core.errors import UserError


def test_a_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    write_json(target, {"step": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"step": 2')  # half written when the failure comes
            raise RuntimeError("killed")
    assert target.read_text(encoding="utf-8").replace(" ", "").replace("\n", "") == '{"step":1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_finished_block_replaces_the_file_with_the_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "a.bin"  # the folder is made
    for content in (b"first", b"second"):
        with atomic_path(target, durable=False) as tmp:
            tmp.write_bytes(content)
    assert target.read_bytes() == b"second"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_an_os_error_in_the_block_is_one_line_and_a_killed_writers_temporary_is_found(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(UserError, match="a.bin"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert not list(tmp_path.iterdir())
    stale = tmp_path / ".a.bin.abc123.tmp"  # what a process killed mid-write leaves
    stale.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == 1 and not stale.exists()


def test_a_checkpoints_step_is_read_from_its_header_alone(tmp_path):
    import torch

    from saliency.core.checkpoint import checkpoint_value, load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "c.safetensors", {"step": 1234, "model": {"w": torch.ones(3)}, "name": "x"})
    assert checkpoint_value(path, "step") == 1234 == load_checkpoint(path)["step"]
    assert checkpoint_value(path, "name") == "x"
    assert checkpoint_value(path, "model") is None and checkpoint_value(path, "absent") is None  # no tensors read
    (tmp_path / "torn.safetensors").write_bytes(path.read_bytes()[:20])
    assert checkpoint_value(tmp_path / "torn.safetensors", "step") is None
    assert checkpoint_value(tmp_path / "missing.safetensors", "step") is None
