"""benchmarks/paper_budget.py: a run stopped on one machine, carried in git (only the files
git keeps), resumed in another folder, ends with the bytes of a run never interrupted."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import REPO, run_cli
from saliency.core.artifacts import sha256_file
from saliency.core.checkpoint import load_checkpoint
from saliency.core.errors import UserError

STEPS = 400
TINY = ["--generator", "scenes", "--resolution", "32", "--train-resolution", "32", "--directions", "4",
        "--batch", "8", "--steps", str(STEPS), "--checkpoint-every", "10", "--log-every", "10", "--rca-every", "100",
        "--rca-samples", "16", "--no-bg-search", "--no-charts", "--no-effects", "--device", "cpu"]
# Checkpoints fall on log lines (as the real runs': 500 and 50), so no logged window is cut in two.
# What git carries from a run folder (.gitignore leaves run.pid and run.log on the machine).
CARRIED = ("checkpoint.safetensors", "metrics.jsonl", "config.json", "command.txt", "segments.json")


def tool(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "benchmarks/paper_budget.py", *args, "--root", str(root)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _step(folder: Path) -> int:
    try:
        return int(load_checkpoint(folder / "checkpoint.safetensors")["step"])
    except (UserError, KeyError):  # none yet
        return 0


def _records(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_a_run_carried_in_git_resumes_elsewhere_to_the_uninterrupted_bytes(tmp_path):
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    for root in (machine_a, machine_b):
        root.mkdir()
        (root / "runs.json").write_text(json.dumps({"runs": [{"name": "tiny", "args": TINY},
                                                             {"name": "later", "args": TINY, "after": ["tiny"]}]}))
    first = tool(machine_a, "resume", "--slots", "1")
    assert "started: tiny" in first.stdout  # "later" waits for "tiny" to end
    run_a = machine_a / "tiny"
    wait_for(lambda: _step(run_a) >= 50)
    # Frozen where it stands, so the stop lands mid-run however busy the machine is (a tiny run
    # would otherwise finish its 400 steps while `stop` starts); stop then kills it at its
    # timeout and trims the log to the last checkpoint.
    os.killpg(int((run_a / "run.pid").read_text()), signal.SIGSTOP)
    stopped = tool(machine_a, "stop", "--timeout", "2")
    step = _step(run_a)
    assert f"tiny: stopped at the checkpoint of step {step}" in stopped.stdout and 50 <= step < STEPS
    assert not (run_a / "directions.json").exists()
    assert max(r["step"] for r in _records(run_a)) == step  # the log trimmed to the checkpoint
    shown = tool(machine_a, "status").stdout
    assert "| tiny | - | stopped | %s |" % f"{step:,}" in shown
    pace = re.search(r"^tiny: ([\d,]+) steps an hour over its last ([\d,]+) steps; ([\d,]+) steps left", shown, re.M)
    assert pace and int(pace[1].replace(",", "")) > 0 and int(pace[3].replace(",", "")) == STEPS - step

    (machine_b / "tiny").mkdir()
    for name in CARRIED:  # a clone on another machine holds these and nothing else
        shutil.copy2(run_a / name, machine_b / "tiny" / name)
    assert "started: tiny" in tool(machine_b, "resume", "--slots", "1").stdout
    run_b = machine_b / "tiny"
    pid = int((run_b / "run.pid").read_text())
    wait_for(lambda: (run_b / "directions.json").is_file() and not Path(f"/proc/{pid}/cmdline").read_bytes())
    assert "| tiny | - | ended: %d steps |" % STEPS in tool(machine_b, "status").stdout

    fresh = tmp_path / "fresh"
    made = run_cli("discover", *TINY, "--out", str(fresh), env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert made.returncode == 0, made.stderr
    assert sha256_file(run_b / "directions.safetensors") == sha256_file(fresh / "directions.safetensors")
    assert _records(run_b) == _records(fresh)  # every step and RCA line, once, with the same values
    segments = json.loads((run_b / "segments.json").read_text())
    assert [s["from_step"] for s in segments] == [0, step] and segments[0]["to_step"] == step

    # sealed: R kept, the optimizer state gone; "later" may start now
    assert "sealed: tiny" in tool(machine_b, "seal").stdout
    assert not (run_b / "checkpoint.safetensors").exists()
    kept = load_file(run_b / "reconstructor.safetensors")
    expected = load_checkpoint(fresh / "checkpoint.safetensors")["reconstructor"]
    assert kept.keys() == expected.keys() and all(kept[k].equal(expected[k]) for k in kept)
    assert "started: later" in tool(machine_b, "resume", "--slots", "1").stdout
    tool(machine_b, "stop", "--timeout", "0")


def test_a_run_continued_on_another_device_changes_its_device_alone(tmp_path, monkeypatch):
    """`resume --device cuda` runs the listed command with that device; command.txt keeps the
    listed one, and a CPU run's segment names no GPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_budget", REPO / "benchmarks" / "paper_budget.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_budget", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    run = module.Run(name="tiny", args=TINY)
    listed, moved = run.command(tmp_path), run.command(tmp_path, "cuda")
    assert listed[listed.index("--device") + 1] == "cpu" and moved[moved.index("--device") + 1] == "cuda"
    assert [a for a in listed if a != "cpu"] == [a for a in moved if a != "cuda"]
    assert module.gpu_name("cpu") is None and module.gpu_name(None) is None
    without = module.Run(name="tiny", args=[a for a in TINY if a not in ("--device", "cpu")])
    assert without.command(tmp_path, "cuda")[-4:-2] == ["--device", "cuda"]


def test_follow_starts_each_waiting_run_as_its_predecessor_ends(tmp_path):
    """`follow --slots 1`: "later" waits for "first"; follow starts it when "first" ends, and
    leaves once nothing runs, its pid file gone."""
    short = [a if a != str(STEPS) else "20" for a in TINY]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"name": "first", "args": short},
                                                             {"name": "later", "args": short, "after": ["first"]}]}))
    followed = tool(tmp_path, "follow", "--slots", "1", "--every", "0.2", "--nice", "5")
    lines = [line.split(" ", 1)[1] for line in followed.stdout.splitlines() if line[:2].isdigit()]
    assert lines == ["started: first", "ended: first", "started: later", "ended: later", "none running: follow ends"]
    for name in ("first", "later"):
        assert (tmp_path / name / "directions.json").is_file()
    assert not (tmp_path / "follow.pid").exists()


def test_stop_ends_a_follower_before_it_can_start_the_stopped_run_again(tmp_path):
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"name": "tiny", "args": TINY}]}))
    follower = subprocess.Popen([sys.executable, "benchmarks/paper_budget.py", "follow", "--slots", "1", "--every",
                                 "0.1", "--root", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "follow.pid").is_file() and _step(tmp_path / "tiny") >= 10)
        run_pid = int((tmp_path / "tiny" / "run.pid").read_text())
        os.killpg(run_pid, signal.SIGSTOP)  # mid-run however busy the machine is (as above)
        stopped = tool(tmp_path, "stop", "--timeout", "1")
        assert "tiny: stopped at the checkpoint of step" in stopped.stdout
        assert follower.wait(timeout=30) == 0  # ended by stop, not by the run ending
        said = [line.split(" ", 1)[1] for line in follower.stdout.read().splitlines() if line[:2].isdigit()]
        assert said[-1] == "stopped (paper_budget.py stop): follow ends"  # the log says why it left
        assert not (tmp_path / "follow.pid").exists() and not (tmp_path / "tiny" / "run.pid").exists()
        assert "| tiny | - | stopped |" in tool(tmp_path, "status").stdout
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.communicate()


def _module(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_budget", REPO / "benchmarks" / "paper_budget.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_budget", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling here")
def test_nice_reaches_the_runs_scheduling_group_even_when_linux_asks_to_wait(monkeypatch):
    """A user other than root may set one autogroup's nice per 100 ms (EAGAIN otherwise): the
    refusal is tried again, so every run started in a row gets its nice."""
    module = _module(monkeypatch)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    real_write, refusals = Path.write_text, []

    def busy_twice(self, text, *args, **kwargs):
        if self.name == "autogroup" and len(refusals) < 2:
            refusals.append(text)
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", busy_twice)
    try:
        module._lower_priority(sleeper.pid, 7)
        assert refusals == ["7", "7"]
        assert Path(f"/proc/{sleeper.pid}/autogroup").read_text().split()[-1] == "7"  # "/autogroup-N nice 7"
        assert os.getpriority(os.PRIO_PROCESS, sleeper.pid) == 7
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unreadable_checkpoint_is_shown_and_not_started_and_one_follow_at_a_time(tmp_path):
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"name": "torn", "args": TINY}]}))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert "| torn | - | checkpoint unreadable |" in tool(tmp_path, "status").stdout
    result = tool(tmp_path, "resume", "--slots", "1")
    assert "started: nothing" in result.stdout and "torn: its checkpoint cannot be read; not started" in result.stderr
    assert not (tmp_path / "torn" / "run.pid").exists()

    # a follow already following this folder (its command line as a follow's): a second one refuses
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "paper_budget.py", "follow"])
    try:
        (tmp_path / "follow.pid").write_text(str(other.pid))
        wait_for(lambda: Path(f"/proc/{other.pid}/cmdline").read_bytes().count(b"follow"), timeout=30)
        second = subprocess.run([sys.executable, "benchmarks/paper_budget.py", "follow", "--root", str(tmp_path)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"another follow (pid {other.pid})" in second.stderr
        assert "Traceback" not in second.stderr and (tmp_path / "follow.pid").read_text() == str(other.pid)
    finally:
        other.kill()
        other.wait()
    missing = subprocess.run([sys.executable, "benchmarks/paper_budget.py", "follow", "--root", str(tmp_path / "no")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "runs.json not found" in missing.stderr and "Traceback" not in missing.stderr


def test_a_run_listed_at_bf16_plays_fp32_on_a_cpu_without_native_bf16_and_says_so(tmp_path, monkeypatch):
    """bf16 autocast is emulated on a CPU without native bf16 (13.6x slower than fp32 there): such
    a span plays fp32, unless told; the status names every precision the run's spans played."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_budget", REPO / "benchmarks" / "paper_budget.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_budget", module)
    spec.loader.exec_module(module)
    run = module.Run(name="tiny", args=TINY + ["--precision", "bf16"])
    assert run.span_precision(native_bf16=False) == "fp32" and run.span_precision(native_bf16=True) == "bf16"
    assert run.span_precision("cuda", native_bf16=False) == "bf16"  # a GPU's autocast is its own
    assert run.span_precision(precision="bf16", native_bf16=False) == "bf16"  # told to
    assert module.Run(name="t", args=TINY).span_precision(native_bf16=False) == "auto"  # only bf16 is replaced
    played = run.command(tmp_path, None, "fp32")
    assert played[played.index("--precision") + 1] == "fp32" and played.count("--precision") == 1
    assert run.command(tmp_path)[run.command(tmp_path).index("--precision") + 1] == "bf16"  # command.txt's

    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"name": "tiny", "args": run.args}]}))
    (tmp_path / "tiny").mkdir()
    segments = [{"from_step": 0, "cpu": "A", "to_step": 10},  # before spans said: the listed one
                {"from_step": 10, "cpu": "B", "precision": "fp32", "to_step": 20},
                {"from_step": 20, "cpu": "A", "precision": "bf16"}]
    (tmp_path / "tiny" / "segments.json").write_text(json.dumps(segments))
    assert [row["precision"] for row in module.status(tmp_path)] == ["bf16, fp32"]
    (tmp_path / "tiny" / "segments.json").write_text(json.dumps(segments[:1]))
    assert [row["precision"] for row in module.status(tmp_path)] == ["bf16"]


def test_the_status_tells_two_cpus_of_one_model_name_apart_by_native_bf16(tmp_path, monkeypatch):
    """"AMD EPYC" named both a CPU with native bf16 and one without (a discovery step in fp32:
    108.5 ms on one, 552.1 ms on the other): the status tags each span's CPU by what decides its pace."""
    module = _module(monkeypatch)
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"name": "tiny", "args": TINY}]}))
    (tmp_path / "tiny").mkdir()
    segments = [{"from_step": 0, "cpu": "AMD EPYC", "native_bf16": True, "to_step": 10},
                {"from_step": 10, "cpu": "AMD EPYC (AVX2)", "native_bf16": False, "to_step": 20},
                {"from_step": 20, "cpu": "AMD EPYC", "native_bf16": False, "to_step": 30},
                {"from_step": 30, "cpu": "Old", "to_step": 40},  # recorded before native_bf16 was
                {"from_step": 40, "cpu": "AMD EPYC", "gpu": "NVIDIA H200", "native_bf16": True}]
    (tmp_path / "tiny" / "segments.json").write_text(json.dumps(segments))
    assert [row["cpus"] for row in module.status(tmp_path)] == [
        "AMD EPYC (native bf16), AMD EPYC (no native bf16), NVIDIA H200, Old"]


def test_a_cpu_is_named_with_its_widest_vector_instructions():
    from saliency.core.runtime import cpu_name, vector_instructions

    assert vector_instructions({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "AMX"
    assert vector_instructions({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512 BF16"
    assert vector_instructions({"avx2", "avx512f"}) == "AVX-512"
    assert vector_instructions({"sse4_2", "avx2"}) == "AVX2"
    assert vector_instructions({"sse4_2"}) == ""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    tag = vector_instructions(set(flags))
    assert cpu_name().endswith(f"({tag})") == bool(tag)
