"""The long fuzz run over every reader of outside data (the targets: tests/support/fuzz_targets.py).

    python benchmarks/fuzz_readers.py --minutes 30 [--family images] [--out fuzz-findings.json]

Runs hypothesis on each family for the given minutes of this process's CPU time (one family
after another, one thread; a new random seed each call, or --seed), so that a shared CPU does
not shorten the run; and prints per family the inputs tried and each
distinct finding: the exception type and message, where it was raised, and the input, shrunk,
as hex. A finding becomes a case of the bad-input matrix (tests/contracts/test_bad_inputs.py)
or of the short fuzz run once it is fixed. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import HypothesisException  # noqa: E402

from fuzz_targets import FAMILIES, check, inputs  # noqa: E402
from saliency.core.runtime import cpu_name  # noqa: E402


class _TimeUp(Exception):
    """Raised by the target once the family's minutes are spent: ends hypothesis's run."""


def fuzz(name: str, minutes: float, seed: int | None) -> dict:
    family = FAMILIES[name]
    tried, findings = 0, {}
    started_wall, started_cpu = time.monotonic(), time.process_time()
    deadline = started_cpu + 60 * minutes
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        while time.process_time() < deadline:
            @settings(max_examples=1_000_000, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
            @given(inputs(family))
            def run(data: bytes) -> None:
                nonlocal tried
                if time.process_time() > deadline:
                    raise _TimeUp
                tried += 1
                check(family, data, Path(tmp) / f"case-{tried}")

            if seed is not None:
                from hypothesis import seed as with_seed

                run = with_seed(seed + len(findings))(run)
            try:
                run()
            except _TimeUp:
                break
            except HypothesisException as exc:
                flaky = getattr(exc, "exceptions", None)  # FlakyFailure: a finding seen once
                if not flaky:
                    raise
                exc = flaky[0]
                if isinstance(exc, _TimeUp):
                    break
                exc.__notes__ = [str(getattr(exc, "__notes__", [""])[-1]) or "(a flaky finding: first input unknown)"]
                key = f"{type(exc).__name__} (flaky)"
                if key not in findings:
                    findings[key] = {"message": " ".join(str(exc).split())[:300], "input_hex": ""}
                    print(f"{name}: found {key}: {findings[key]['message']}", flush=True)
            except Exception as exc:  # a finding: hypothesis has shrunk it already
                frames = traceback.extract_tb(exc.__traceback__)
                where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
                key = f"{type(exc).__name__} at {where}"
                if key not in findings:
                    findings[key] = {"message": " ".join(str(exc).split())[:300],
                                     "input_hex": getattr(exc, "__notes__", [""])[-1][:2000]}
                    print(f"{name}: found {key}: {findings[key]['message']}", flush=True)
    return {"family": name, "cpu_minutes": round((time.process_time() - started_cpu) / 60, 1),
            "wall_minutes": round((time.monotonic() - started_wall) / 60, 1), "inputs": tried,
            "findings": findings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU minutes per family.")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="Default: all.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = [fuzz(name, args.minutes, args.seed) for name in (args.family or sorted(FAMILIES))]
    print(f"CPU: {cpu_name()}")
    print("| family | CPU minutes | wall minutes | inputs tried | findings |")
    print("|---|---:|---:|---:|---|")
    for result in results:
        found = "; ".join(result["findings"]) or "none"
        print(f"| {result['family']} | {result['cpu_minutes']:g} | {result['wall_minutes']:g} "
              f"| {result['inputs']:,} | {found} |")
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=1) + "\n")
    sys.exit(1 if any(result["findings"] for result in results) else 0)


if __name__ == "__main__":
    main()
