"""The ``saliency`` command line: the group, and the one error boundary every command runs inside.

Each command lives in its own module under ``pipelines/commands/``. Bad input ends with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from saliency import __version__
from saliency.core.errors import ConfigError, UserError, one_line
from pipelines.commands import COMMANDS
from pipelines.options import flag_names


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="saliency")
def cli() -> None:
    """Saliency detection from a GAN's latent directions, with no pixel labels.

    Stages (Voynov & Babenko, ICML 2020): discover latent directions and the
    background-removal direction, synthesize (image, mask) pairs with it, train a U-Net
    on them, evaluate on a saliency benchmark such as ECSSD.
    """


for _command in COMMANDS:
    cli.add_command(_command)


def _one_line_warnings(show):
    """Our own warnings as one line on stderr (``saliency: warning: ...``), not file and line."""
    from saliency.core.runtime import EmulatedPrecisionWarning

    def shown(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EmulatedPrecisionWarning):
            print(f"saliency: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)
    return shown


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and exit code 2."""
    import warnings

    from saliency.core.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    if not getattr(warnings.showwarning, "one_line", False):
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        warnings.showwarning.one_line = True
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=argv, prog_name="saliency", standalone_mode=False)
    except ConfigError as exc:  # named by its config field: say the flag the user typed instead
        command = next((cli.commands[arg] for arg in argv if arg in cli.commands), None)
        forwarded = cli.commands["discover"] if command is cli.commands["sweep"] else None  # a sweep's cells
        return _fail(exc.naming(flag_names(forwarded, command)), exc.exit_code)
    except UserError as exc:
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", 130, prefix="saliency: ")
    except KeyboardInterrupt:
        return _fail("interrupted", 130, prefix="saliency: ")
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        return _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except BrokenPipeError:
        return 1
    except ValueError as exc:  # a NUL in a path: no shell can pass one, a Python caller of main can
        if "null" not in str(exc):
            raise
        return _fail(f"a path or name holds a NUL character ({exc})", 2)
    except OSError as exc:  # a filesystem failure no check caught: still one line, never a traceback
        return _fail(_describe_os_error(exc), 1)
    return 0


def _fail(message: str, code: int, prefix: str = "saliency: error: ") -> int:
    if "tqdm" in sys.modules:  # a bar left open by the failed stage would glue itself to the message
        from saliency.core.progress import close_progress_bars

        close_progress_bars()
    click.echo(f"{prefix}{one_line(message)}", err=True)
    return code


def _describe_os_error(exc: OSError) -> str:
    from saliency.core.artifacts import DISK_FULL_ERRNOS

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in DISK_FULL_ERRNOS:
        return f"disk full{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{where}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
