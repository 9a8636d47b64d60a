"""The ``sugar`` console script's root: the app, error handling and the shared options.

Subcommands land with the issues that build them (DESIGN.md lists the target set). Every
subcommand that takes a config accepts ``CONFIG [KEY=VALUE ...]`` overrides, merged strictly
(:mod:`sugar.config`). Errors a user can fix print one line naming the file, key or value and
exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sugar import __version__
from sugar.config import ConfigError

app = typer.Typer(
    name="sugar",
    help="Train one multimodal LLM to generate and embed (the Sugar method), then embed, "
    "index, retrieve, answer and evaluate with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# The command groups, in the order ``sugar --help`` lists them.
config_app = typer.Typer(help="Inspect and resolve configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Validate, convert and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
teachers_app = typer.Typer(
    help="Precompute and inspect the frozen teachers' slice embeddings.", no_args_is_help=True
)
app.add_typer(teachers_app, name="teachers")
targets_app = typer.Typer(help="Diagnose the Sugar targets before training.", no_args_is_help=True)
app.add_typer(targets_app, name="targets")
index_app = typer.Typer(
    help="Build, update and inspect persistent vector indexes of a model's embeddings.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")
bench_app = typer.Typer(help="Measure the method: the variant comparison.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn errors a user can fix into one clear line on stderr and exit status 2: sugar's own
    (``ValueError`` and its subclasses: config, data, checksum, non-finite), and what the
    operating system says about a path the user gave (``OSError``: a directory where a file is
    expected, a name too long, no permission, a lock held by another process)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, ValueError, OSError, RecursionError) as exc:
            typer.echo(f"sugar: error: {error_line(exc)}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: an ``OSError`` as ``FILE: what the system said``, anything else
    its message, newlines folded."""
    if isinstance(exc, RecursionError):
        text = "the input is nested too deeply to process"
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        name = str(exc.filename)
        text = f"{name[:200]}{'...' if len(name) > 200 else ''}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


ConfigPath = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file; omit for the defaults. Repeat it to merge overlays in order, "
        "e.g. -c configs/sugar.yaml -c configs/smoke.yaml (the config at toy size).",
        show_default=False,
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides, e.g. model.grid=2 model.image_dropout=0.3.", metavar="KEY=VALUE"
    ),
]


Resume = Annotated[
    bool,
    typer.Option(
        help="Continue the run in the config's output directory from its last checkpoint."
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        help="One-thread worker processes the recipe spreads its runs over (data parallel, or "
        "runs side by side: the recipe's docs say which).",
        min=1,
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sugar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Train one multimodal LLM to generate and embed (the Sugar method)."""


DataRoot = Annotated[
    Path | None,
    typer.Option(help="Dataset root for image paths (default: the data file's folder)."),
]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="sugar")
