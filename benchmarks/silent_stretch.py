"""The longest silent stretch of a command: how long it went without writing a line.

    python benchmarks/silent_stretch.py [--top 5] [--no-echo] [--json OUT] -- saliency pipeline --profile biggan ...

Runs the command (everything after ``--``) as a subprocess with PYTHONUNBUFFERED=1, reads its
stdout and stderr byte streams as they come (unbuffered), and timestamps each line; both "\\n"
and "\\r" end a line, so a tqdm bar's redraw counts as output; a line is stamped with the time
its first byte came. The command's own output is passed through (to this script's stderr,
unless --no-echo) so that it can be watched.

Prints the total time, the longest gap between consecutive lines (from the start to the first
line, and from the last line to the exit, count too) with the line before it and the line that
ended it, and the top N gaps (with --json, also writes them, every gap included, to OUT).
Exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def _reader(stream, name: str, lines: list, lock: threading.Lock, echo: bool) -> None:
    """Split a byte stream into lines at "\\n" or "\\r", each stamped with the time its first
    byte came: tqdm writes "\\r" + the bar, so a redraw is seen when it starts, not when the next
    redraw ends it."""
    current = None  # the line being received: [time, stream, bytes]
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        now = time.monotonic()
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
        parts = chunk.replace(b"\r", b"\n").split(b"\n")
        with lock:
            for i, part in enumerate(parts):
                if i > 0:  # a line end came before this part
                    current = None
                if not part:
                    continue
                if current is None:
                    current = [now, name, b""]
                    lines.append(current)
                current[2] += part


def measure(command: list[str], echo: bool = True) -> dict:
    """Run the command; return its exit status, total seconds and the gaps between its lines."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    lines: list = []
    lock = threading.Lock()
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, bufsize=0)
    readers = [threading.Thread(target=_reader, args=(stream, name, lines, lock, echo), daemon=True)
               for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    returncode = process.wait()
    for reader in readers:
        reader.join()
    end = time.monotonic()
    lines = [(stamp, name, text.decode("utf-8", "replace").strip()) for stamp, name, text in lines]
    lines = sorted((line for line in lines if line[2]), key=lambda line: line[0])  # blank: a bar cleared
    marks = [(start, "-", "(start)")] + lines + [(end, "-", f"(exit {returncode})")]
    gaps = [{"seconds": after[0] - before[0], "at": before[0] - start, "before": before[2], "after": after[2]}
            for before, after in zip(marks, marks[1:])]
    gaps.sort(key=lambda gap: gap["seconds"], reverse=True)
    return {"returncode": returncode, "total_seconds": end - start, "lines": len(lines), "gaps": gaps}


def _short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: silent_stretch.py [--top N] [--no-echo] [--json OUT] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5, help="how many of the longest gaps to list")
    parser.add_argument("--no-echo", dest="echo", action="store_false", help="do not pass the command's output on")
    parser.add_argument("--json", default=None, help="also write the report (every gap) to this file")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("no command after --")
    report = measure(command, echo=args.echo)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"command": command, **report}, file, indent=1)
    gaps = report["gaps"]
    longest = gaps[0]
    print(f"command: {' '.join(command)}")
    print(f"exit status: {report['returncode']}; total: {report['total_seconds']:.1f} s; lines: {report['lines']}")
    print(f"longest silence: {longest['seconds']:.1f} s, from {longest['at']:.1f} s")
    print(f"  before: {_short(longest['before'])}")
    print(f"  after:  {_short(longest['after'])}")
    print(f"top {min(args.top, len(gaps))} gaps:")
    for gap in gaps[: args.top]:
        print(f"  {gap['seconds']:7.1f} s at {gap['at']:7.1f} s | {_short(gap['before'], 70)} -> {_short(gap['after'], 70)}")
    return report["returncode"]


if __name__ == "__main__":
    sys.exit(main())
