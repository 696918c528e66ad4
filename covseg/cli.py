"""The `covseg` command: one Typer app, command groups discovered in `covseg.commands`.

Errors are mapped to exit codes in exactly one place (`run`): a `CovsegError` prints one line
and exits with its class's code; anything else is a bug (exit 1) whose traceback is shown only
with --debug.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence

import typer

from covseg import __version__
from covseg.errors import CancelledError, CovsegError


def _cli_exception_types() -> tuple[tuple[type[BaseException], ...], ...]:
    """(exit, usage, abort) exception types of Typer and, when present, of click.

    Typer >= 0.26 bundles its own copy of click whose exceptions are not click's own; older
    Typer raises click's. Both are caught so a usage error always exits 2, never 1.
    """
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    usages: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        usages.append(TyperClickException)
    except ImportError:  # pragma: no cover - Typer without a bundled click
        pass
    try:
        import click

        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        usages.append(click.ClickException)
    except ImportError:  # pragma: no cover - click not installed
        pass
    return tuple(exits), tuple(usages), tuple(aborts)


_EXIT, _USAGE, _ABORT = _cli_exception_types()
_ABORT_OR_INTERRUPT: tuple[type[BaseException], ...] = (*_ABORT, KeyboardInterrupt)

app = typer.Typer(
    name="covseg",
    help="Segment and quantify COVID-19 lung infection, lungs and liver in chest CT. "
    "Research software, not a medical device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"covseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of unexpected errors."),
) -> None:
    """Segment and quantify COVID-19 lung infection, lungs and liver in chest CT."""
    if debug:
        os.environ["COVSEG_DEBUG"] = "1"


def _register_commands() -> None:
    import covseg.commands as package

    modules = [importlib.import_module(f"{package.__name__}.{info.name}")
               for info in pkgutil.iter_modules(package.__path__)]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(app)


_register_commands()


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("COVSEG_DEBUG") == "1"


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; `main` exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="covseg", standalone_mode=False)
    except _EXIT as stop:
        return int(getattr(stop, "exit_code", 0))
    except _USAGE as usage:
        usage.show()  # type: ignore[attr-defined]
        return int(getattr(usage, "exit_code", 2))
    except _ABORT_OR_INTERRUPT:
        error = CancelledError("interrupted; nothing was written")
        print(f"covseg: {error}", file=sys.stderr)
        return error.exit_code
    except CovsegError as error:
        if _debug_requested(args):
            raise
        print(f"covseg: {error.kind} error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as bug:
        if _debug_requested(args):
            raise
        print(f"covseg: unexpected error ({type(bug).__name__}: {bug}); this is a bug, "
              "rerun with --debug for the traceback", file=sys.stderr)
        return 1
    code = int(result) if isinstance(result, int) else 0
    if code == CancelledError.exit_code:
        # Typer's bundled click turns Ctrl-C into Abort and, outside standalone mode, returns 130
        # silently instead of raising: say what happened, as for every other error.
        print(f"covseg: {CancelledError('interrupted; nothing was written')}", file=sys.stderr)
    return code


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # SIGTERM (Slicer's Cancel, a batch scheduler) unwinds like Ctrl-C, so atomic writers clean up.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    sys.exit(run())
