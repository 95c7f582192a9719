"""The `bench` command line: one typer app, one module per command group.

Each command parses its options, calls the library, and leaves error handling to `main`:
a usage or data error (BenchError, or a usage error of the parser) is one line on stderr
and exit code 2; an unexpected error is exit code 1, with the traceback behind -v.
Command groups of plug-ins (the SAE library's `bench sae`, SAE-Rad's `bench features`,
RadFact's `bench radfact`) come from the entry-point group `saerad_bench.commands`.
"""

from __future__ import annotations

import logging
import sys
import traceback

import typer
from rich.logging import RichHandler

from bench.cli.common import console
from bench.errors import BenchError

log = logging.getLogger(__name__)


def build_app() -> typer.Typer:
    from bench.cli import check, compute, data, env, listing, stages

    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Benchmark chest X-ray report generators (SAE-Rad, baselines, external models).")

    @app.callback()
    def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging; tracebacks on errors")) -> None:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True,
                            handlers=[RichHandler(console=console, show_path=False, show_time=False)])

    stages.register(app)
    listing.register(app)
    data.register(app)
    check.register(app)
    env.register(app)
    compute.register(app)
    _mount_plugins(app)
    return app


def _mount_plugins(app: typer.Typer) -> None:
    from bench.registry import PluginLoadError, commands

    try:
        names = commands.names()
    except BenchError:  # no plug-in commands installed
        return
    for name in names:
        try:
            obj = commands.load(name)
        except PluginLoadError as exc:  # one broken plug-in must not take the CLI down
            log.warning("%s", exc)
            continue
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=name)
        elif callable(obj):
            app.command(name)(obj)
        else:
            log.warning("command plug-in %s is neither a typer app nor a function; skipped", name)


def _parser_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, exits, aborts) of click and of the click that typer vendors, if it does."""
    usage: list[type] = []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort, KeyboardInterrupt]
    try:  # recent typer versions ship their own click ...
        import typer._click.exceptions as vendored

        usage.append(vendored.UsageError)
    except ImportError:
        pass
    try:  # ... older ones use click itself
        import click

        usage.append(click.exceptions.UsageError)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(exits), tuple(aborts)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    usage_errors, exits, aborts = _parser_exceptions()
    try:
        rc = build_app()(args, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        # soft_wrap: a one-line error stays one line (paths are not broken), whatever the width
        console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
        if verbose:
            console.print(traceback.format_exc(), highlight=False, markup=False)
        sys.exit(2)
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            console.print(exc.format_message(), highlight=False, markup=False)
            sys.exit(2)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        console.print(f"[red]usage error:[/red] {exc.format_message()}{hint}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except exits as exc:
        sys.exit(exc.exit_code)
    except aborts:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception as exc:  # a bug: say so, keep the traceback for -v
        console.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc}"
                      + ("" if verbose else " (run with -v for the traceback)"), highlight=False, markup=True,
                      soft_wrap=True)
        if verbose:
            console.print(traceback.format_exc(), highlight=False, markup=False)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
