"""The paper-budget MNIST runs (issue 33), carried from machine to machine in git.

    python benchmarks/paper_budget.py status             # where each run got
    python benchmarks/paper_budget.py resume [--slots 3] # start every unfinished run, in the background
    python benchmarks/paper_budget.py resume --device cuda  # the same runs continued on a GPU
    python benchmarks/paper_budget.py follow [--slots 2] # resume, then start each waiting run as a slot frees
    python benchmarks/paper_budget.py stop               # stop each right after its next checkpoint
    python benchmarks/paper_budget.py seal               # ended runs: keep A, R, metrics; drop the optimizers

The runs and their commands are listed in ``ROOT/runs.json`` (default ``checkpoints/paper-budget``),
in the order they start; a run with ``"after"`` starts only once those runs have ended. Each run
is a ``saliency discover`` folder, ``ROOT/NAME/``, that git carries: ``checkpoint.safetensors``
(A, R, both optimizers, the sample stream; replaced every 500 steps), ``metrics.jsonl``,
``config.json``, ``command.txt`` (the exact command) and ``segments.json`` (which CPU or GPU ran
which steps). ``resume`` runs each with one thread (``OMP_NUM_THREADS=1``: two 2-thread processes on 2
cores slowed each other about 20x), detached, its output in ``run.log`` (not carried). ``stop``
waits for each run's next checkpoint, kills it at once and trims ``metrics.jsonl`` back to that
step: what is committed is exactly what the next ``resume`` continues from, and a resumed run
writes the bytes an uninterrupted one would (same thread count, same CPU kernels).
``resume --device cuda`` continues the same runs on a GPU (where one is lent for a while): the
sample stream stays the CPU's, so the GPU plays the very batches the CPU would have; its
kernels round differently, and ``segments.json`` records the device of each span of steps.
A run listed at bf16 plays fp32 on a CPU without native bf16 (autocast is emulated there, many
times slower); ``segments.json`` records each span's precision (``--precision`` overrides).
``follow`` resumes, then stays (in the foreground: ``nohup ... &`` to leave it) and starts the
next waiting run each time a run ends, until none is left running; ``stop`` ends it first, so it
cannot start again what ``stop`` stops. ``--nice 19`` lets the machine's other work go first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saliency.core.artifacts import trim_step_log, write_json, write_safetensors  # noqa: E402
from saliency.core.checkpoint import checkpoint_value, load_checkpoint  # noqa: E402
from saliency.core.runtime import cpu_has_native_bf16, cpu_name  # noqa: E402

CHECKPOINT, METRICS, SUMMARY = "checkpoint.safetensors", "metrics.jsonl", "directions.json"
PID, LOG, SEGMENTS, COMMAND = "run.pid", "run.log", "segments.json", "command.txt"
FOLLOWER = "follow.pid"  # in ROOT, while a `follow` runs (not carried)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Run:
    name: str
    args: list[str]
    after: list[str] = field(default_factory=list)
    note: str = ""
    paper: float | None = None  # the paper's RCA for this setting

    def folder(self, root: Path) -> Path:
        return root / self.name

    def arg(self, option: str, default: str | None = None) -> str | None:
        """The value the listed arguments give ``option`` (e.g. ``--steps``)."""
        return self.args[self.args.index(option) + 1] if option in self.args else default

    def command(self, root: Path, device: str | None = None, precision: str | None = None) -> list[str]:
        """The discover command, run from the repository's root: a folder inside it is named
        relative to it (so command.txt and config.json name no machine's paths). ``device`` and
        ``precision`` replace the listed ones (the run's identity includes neither)."""
        args = list(self.args)
        for option, value in (("--device", device), ("--precision", precision)):
            if value is None:
                continue
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        return ["saliency", "discover", *args, "--out", out_argument(self.folder(root))]

    @property
    def listed_precision(self) -> str:
        """The precision runs.json lists: what a span that records none played at."""
        return self.arg("--precision", "auto")

    def span_precision(self, device: str | None = None, precision: str | None = None,
                       native_bf16: bool | None = None) -> str:
        """The precision a span of this run plays at here: ``precision`` if given, else the listed
        one, except bf16 on a CPU without native bf16, where autocast is emulated (measured 13.6x
        slower than fp32 on a 2-core AMD EPYC with AVX2 alone: docs/benchmarks.md) and the span
        plays fp32. The listed bf16 was chosen by its RCA matching fp32's (docs/benchmarks.md)."""
        if precision is not None:
            return precision
        listed = self.listed_precision
        on_cpu = (device or self.arg("--device", "cpu")) == "cpu"
        if listed == "bf16" and on_cpu and not (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
            return "fp32"
        return listed


def out_argument(folder: Path) -> str:
    folder = folder.resolve()
    return str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)


def load_runs(root: Path) -> list[Run]:
    listing = root / "runs.json"
    if not listing.is_file():
        sys.exit(f"paper_budget: {listing} not found")
    return [Run(**entry) for entry in json.loads(listing.read_text(encoding="utf-8"))["runs"]]


def ended(folder: Path) -> bool:
    return (folder / SUMMARY).is_file()


def running_pid(folder: Path) -> int | None:
    """The run's process id if that process is alive and still this run's discover."""
    try:
        pid = int((folder / PID).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and "discover" in cmdline and out_argument(folder) in cmdline.split("\0") else None


def checkpoint_step(folder: Path) -> int | None:
    step = checkpoint_value(folder / CHECKPOINT, "step")
    return int(step) if step is not None else None


def _step_log(folder: Path) -> list[dict]:
    """The run's metrics.jsonl records (a line cut short by a kill is passed over)."""
    path = folder / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def rca_records(folder: Path) -> list[tuple[int, float]]:
    return [(record["step"], record["rca"]) for record in _step_log(folder) if "rca" in record]


def pace(folder: Path, window: int = 1000) -> tuple[float, int] | None:
    """(steps an hour, over how many steps) of the run's latest ``window`` steps, from its
    step log's running seconds (the time it ran, not the time it lay stopped)."""
    timed = [(record["step"], record["seconds"]) for record in _step_log(folder)
             if "seconds" in record and "loss" in record]
    if len(timed) < 2:
        return None
    last_step, last_seconds = timed[-1]
    first_step, first_seconds = next((t for t in timed if t[0] >= last_step - window), timed[0])
    if last_step <= first_step or last_seconds <= first_seconds:
        return None
    return 3600 * (last_step - first_step) / (last_seconds - first_seconds), last_step - first_step


def _segments(folder: Path) -> list[dict]:
    path = folder / SEGMENTS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def status(root: Path) -> list[dict]:
    rows = []
    for run in load_runs(root):
        folder = run.folder(root)
        summary = json.loads((folder / SUMMARY).read_text()) if ended(folder) else None
        curve = rca_records(folder)
        if summary is not None:
            stop = summary.get("stopped_early")
            state = f"ended: {'plateau rule at step %d' % stop['step'] if stop else '%d steps' % summary['steps']}"
            step = summary["steps"]
        else:
            step = checkpoint_step(folder)
            state = ("running" if running_pid(folder) else
                     "checkpoint unreadable" if step is None and (folder / CHECKPOINT).is_file() else
                     "stopped" if step is not None else "not started")
        segments = _segments(folder)
        cpus = sorted({segment.get("gpu") or machine_label(segment) for segment in segments})
        listed = run.listed_precision
        precisions = list(dict.fromkeys(segment.get("precision", listed) for segment in segments)) or [listed]
        total = run.arg("--steps")
        rows.append({"run": run.name, "note": run.note, "paper": run.paper, "state": state, "step": step or 0,
                     "latest_rca": curve[-1] if curve else None,
                     "final_rca": summary.get("rca") if summary else None, "precision": ", ".join(precisions),
                     "cpus": ", ".join(cpus) or "-", "pace": None if summary is not None else pace(folder),
                     "steps_left": int(total) - (step or 0) if total is not None else None})
    return rows


def machine_label(segment: dict) -> str:
    """The CPU a span played on, tagged by what decides its pace here: native bf16 or not (the
    model name alone, "AMD EPYC", covers both kinds)."""
    if "native_bf16" not in segment:
        return segment["cpu"]
    base = segment["cpu"].split(" (")[0]
    return f"{base} ({'native bf16' if segment['native_bf16'] else 'no native bf16'})"


def gpu_name(device: str | None) -> str | None:
    """The GPU a ``cuda`` device names, or None for a CPU."""
    if device is None or not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"paper_budget: --device {device}: no CUDA GPU here")
    return torch.cuda.get_device_name(torch.device(device))


def _start(run: Run, root: Path, device: str | None = None, nice: int = 0, precision: str | None = None) -> int:
    folder = run.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (folder / CHECKPOINT).is_file() else []
    played, listed = run.span_precision(device, precision), run.listed_precision
    if precision is None and played != listed:
        print(f"paper_budget: {run.name}: this CPU has no native bf16 (autocast would be emulated, far slower): "
              f"this span plays {played} (segments.json says so; --precision bf16 insists)", file=sys.stderr)
    command = run.command(root, device, played if played != listed else None)
    if not (folder / COMMAND).is_file():
        (folder / COMMAND).write_text(" ".join(run.command(root)) + "\n", encoding="utf-8")
    segments = _segments(folder)
    segment = {"from_step": checkpoint_step(folder) or 0, "cpu": cpu_name(),
               "native_bf16": cpu_has_native_bf16(), "threads": 1, "precision": played}
    gpu = gpu_name(device)
    if gpu is not None:  # the game's kernels ran there; the CPU drew the samples
        segment |= {"gpu": gpu, "torch": _torch_version()}
    segments.append(segment | {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    write_json(folder / SEGMENTS, segments)
    with open(folder / LOG, "a", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *command[1:], *resume], cwd=REPO,
                                   env=os.environ | ONE_THREAD, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    (folder / PID).write_text(str(process.pid))
    _wait_for_command_line(process)
    if nice:
        _lower_priority(process.pid, nice)
    return process.pid


def _wait_for_command_line(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Return once the new process shows its command line: for a moment after Popen it reads
    empty (measured: 42 times in 50 here), and ``running_pid`` would take the run for gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if Path(f"/proc/{process.pid}/cmdline").read_bytes():
                return
        except OSError:
            return  # no /proc here: nothing to wait for
        time.sleep(0.01)


def _lower_priority(pid: int, nice: int) -> None:
    """Let other work go first: the run's own session is its scheduling group where the kernel
    groups by session (autogroup), so that group's nice is what counts; the process's too.
    Linux lets a user other than root set one autogroup's nice per 100 ms: a refusal is tried
    again for a second, then said."""
    for _ in range(10):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            break
        except BlockingIOError:
            time.sleep(0.11)
        except OSError:
            break  # no autogroup here: the process's own nice is what counts
    else:
        print(f"paper_budget: warning: could not set the nice of run {pid}'s scheduling group", file=sys.stderr)
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass


def _torch_version() -> str:
    import torch

    return torch.__version__


def resume(root: Path, slots: int, device: str | None = None, nice: int = 0,
           skip: set[str] = frozenset(), precision: str | None = None) -> list[str]:
    """Start unfinished runs, in listed order, until ``slots`` run at once (on ``device``
    instead of the listed one, if given), none of those named in ``skip``."""
    runs = load_runs(root)
    with _starting(root):  # one starter at a time: two would start one run twice into one folder
        done = {run.name for run in runs if ended(run.folder(root))}
        busy = sum(running_pid(run.folder(root)) is not None for run in runs)
        started = []
        for run in runs:
            folder = run.folder(root)
            if busy >= slots or run.name in done or run.name in skip or running_pid(folder) is not None:
                continue
            if any(name not in done for name in run.after):
                continue
            if unreadable_checkpoint(folder):
                print(f"paper_budget: {run.name}: its checkpoint cannot be read; not started", file=sys.stderr)
                continue
            _start(run, root, device, nice, precision)
            started.append(run.name)
            busy += 1
    return started


@contextlib.contextmanager
def _starting(root: Path):
    """Held while runs are started or stopped (an advisory lock on ROOT/.starting.lock)."""
    import fcntl

    with open(root / ".starting.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unreadable_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT).is_file() and checkpoint_step(folder) is None


class FollowStopped(Exception):
    """`stop` ended a `follow` (its SIGTERM handler raises this), so the log says why it left."""


def follow(root: Path, slots: int, device: str | None = None, nice: int = 0, every: float = 30.0,
           say=print, precision: str | None = None) -> None:
    """Resume, then each time a slot frees start the next waiting run, until none runs. A run
    that dies without ending (killed, crashed) is not started again: that is for a person."""
    runs = load_runs(root)
    other = _follower_pid(root)
    if other is not None and other != os.getpid():
        sys.exit(f"paper_budget: another follow (pid {other}) is following {root}")
    (root / FOLLOWER).write_text(str(os.getpid()))
    try:
        seen = {run.name for run in runs if running_pid(run.folder(root))}  # each run started once at most
        if seen:
            say(f"running: {', '.join(run.name for run in runs if run.name in seen)}")
        reported = {run.name for run in runs if ended(run.folder(root))}

        def report_ended() -> None:
            now = {run.name for run in runs if ended(run.folder(root))}
            if now - reported:
                say(f"ended: {', '.join(sorted(now - reported))}")
            gone = sorted(name for name in seen - now - reported
                          if running_pid(root / name) is None)
            if gone:
                say(f"gone without ending: {', '.join(gone)} (see run.log; not started again)")
            reported.update(now, gone)

        while True:
            # what ran before resume looked: a run that ends in between is then seen ended by it
            was_running = any(running_pid(run.folder(root)) for run in load_runs(root))
            with _stop_held():
                started = resume(root, slots, device, nice, skip=seen, precision=precision)
            seen.update(started)
            report_ended()  # after resume: a run it started after is reported ended first
            if started:
                say(f"started: {', '.join(started)}")
            if not was_running and not started:
                break
            time.sleep(every)
        say("none running: follow ends")
    except FollowStopped:
        say("stopped (paper_budget.py stop): follow ends")
    finally:
        if _follower_pid(root) == os.getpid():
            (root / FOLLOWER).unlink(missing_ok=True)


@contextlib.contextmanager
def _stop_held():
    """`stop`'s SIGTERM waits until a run being started has its run.pid (else it would run on,
    unseen by `stop`)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _follower_pid(root: Path) -> int | None:
    try:
        pid = int((root / FOLLOWER).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and "follow" in cmdline and any(a.endswith("paper_budget.py") for a in cmdline) else None


def _end_follower(root: Path, timeout: float = 600.0) -> None:
    """End a `follow`: it leaves once the run it may be starting has its run.pid."""
    pid = _follower_pid(root)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not _reap(pid, timeout):
            sys.exit(f"paper_budget: the follow (pid {pid}) did not end; end it (kill {pid}) and stop again")
    (root / FOLLOWER).unlink(missing_ok=True)


def _close_segment(folder: Path, step: int) -> None:
    segments = _segments(folder)
    if segments and "to_step" not in segments[-1]:
        segments[-1] |= {"to_step": step, "stopped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(folder / SEGMENTS, segments)


def stop(root: Path, timeout: float = 900.0) -> dict[str, int | None]:
    """Kill every running run just after it writes its next checkpoint (or at ``timeout``),
    then trim its step log to that checkpoint. Returns the step each one stopped at. A
    ``follow`` ends first, so that it starts nothing again."""
    _end_follower(root)
    waiting = {}
    with _starting(root):  # a resume under way has started its runs first
        for run in load_runs(root):
            folder = run.folder(root)
            pid = running_pid(folder)
            if pid is not None:
                waiting[run.name] = (folder, pid, _file_token(folder / CHECKPOINT))
    deadline = time.monotonic() + timeout
    stopped = {}
    while waiting:
        for name, (folder, pid, token) in list(waiting.items()):
            exited = not _alive(pid)
            if exited or _file_token(folder / CHECKPOINT) != token or time.monotonic() > deadline:
                if not exited:
                    os.killpg(pid, signal.SIGKILL)
                    _reap(pid)
                step = checkpoint_step(folder)
                if step is not None and not ended(folder):
                    trim_step_log(folder / METRICS, step)
                _close_segment(folder, step or 0)
                (folder / PID).unlink(missing_ok=True)
                stopped[name] = step
                del waiting[name]
        time.sleep(0.05)
    return stopped


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int, timeout: float = 10.0) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; True once it has."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.waitpid(pid, os.WNOHANG)  # our own child (a test's): reap it
        except ChildProcessError:
            pass
        if not _alive(pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _file_token(path: Path):
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def seal(root: Path) -> list[str]:
    """For each ended run: R's weights into ``reconstructor.safetensors``, the optimizer state
    (the checkpoint) out of the folder; A is already in ``directions.safetensors``."""
    sealed = []
    for run in load_runs(root):
        folder = run.folder(root)
        if not ended(folder) or not (folder / CHECKPOINT).is_file() or running_pid(folder):
            continue
        state = load_checkpoint(folder / CHECKPOINT)
        weights = {name: tensor.contiguous() for name, tensor in state["reconstructor"].items()}
        write_safetensors(folder / "reconstructor.safetensors", weights,
                          {"step": str(state["step"]), "run": run.name})
        _close_segment(folder, int(state["step"]))
        (folder / CHECKPOINT).unlink()
        sealed.append(run.name)
    return sealed


def _raise_stopped(*_) -> None:
    raise FollowStopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("status", "resume", "follow", "stop", "seal"))
    parser.add_argument("--root", type=Path, default=REPO / "checkpoints" / "paper-budget")
    parser.add_argument("--slots", type=int, default=3, help="Runs at once (resume, follow); one thread each.")
    parser.add_argument("--nice", type=int, default=0, choices=range(20), metavar="0-19",
                        help="resume, follow: the runs' niceness (19: everything else goes first).")
    parser.add_argument("--every", type=float, default=30.0, help="follow: seconds between looks.")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds stop waits for a checkpoint.")
    parser.add_argument("--device", default=None,
                        help="resume, follow: run on this device instead of the listed one (e.g. cuda on a lent GPU).")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="resume, follow: play at this precision instead of the listed one (default: the listed "
                             "one, but fp32 for bf16 on a CPU without native bf16, where autocast is emulated).")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.action == "resume":
        print("started:", ", ".join(resume(root, args.slots, args.device, args.nice, precision=args.precision))
              or "nothing (all ended, running or waiting)")
    elif args.action == "follow":
        signal.signal(signal.SIGTERM, _raise_stopped)  # `stop` ends it: say so, leave through finally
        follow(root, args.slots, args.device, args.nice, args.every,
               say=lambda line: print(time.strftime("%H:%M:%S"), line, flush=True), precision=args.precision)
    elif args.action == "stop":
        for name, step in stop(root, args.timeout).items():
            print(f"{name}: stopped at the checkpoint of step {step}")
    elif args.action == "seal":
        print("sealed:", ", ".join(seal(root)) or "nothing")
    print("| run | the paper | state | step | latest RCA (step) | final RCA | precision | CPU or GPU |")
    print("|---|---:|---|---:|---:|---:|---|---|")
    rows = status(root)
    for row in rows:
        latest = f"{row['latest_rca'][1]:.3f} ({row['latest_rca'][0]:,})" if row["latest_rca"] else "-"
        final = f"{row['final_rca']:.3f}" if row["final_rca"] is not None else "-"
        paper = f"{row['paper']:.2f}" if row["paper"] is not None else "-"
        print(f"| {row['run']} | {paper} | {row['state']} | {row['step']:,} | {latest} | {final} | "
              f"{row['precision']} | {row['cpus']} |")
    for row in rows:  # the unfinished ones: how fast they went lately, and so how long is left
        if row["pace"] is None:
            continue
        per_hour, over = row["pace"]
        line = f"{row['run']}: {per_hour:,.0f} steps an hour over its last {over:,} steps"
        if row["steps_left"] is not None:
            line += (f"; {row['steps_left']:,} steps left: {row['steps_left'] / per_hour:.1f} h at that pace, "
                     "less if the plateau rule ends it")
        print(line)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
