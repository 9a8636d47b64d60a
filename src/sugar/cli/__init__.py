"""The ``sugar`` console script: one command with subcommands, help generated from signatures.

Wiring only, by command group: :mod:`~sugar.cli.app` (the app, error handling, shared options),
:mod:`~sugar.cli.data` (config, data), :mod:`~sugar.cli.teachers`, :mod:`~sugar.cli.train`
(validate, train, targets), :mod:`~sugar.cli.retrieval` (export, embed, index, search, ask,
mine), :mod:`~sugar.cli.evaluation` (eval, demo, bench), :mod:`~sugar.cli.serve` (serve).
Every subcommand that takes a config accepts ``CONFIG [KEY=VALUE ...]`` overrides, merged
strictly (:mod:`sugar.config`). Errors a user can fix print one line naming the file, key or
value and exit with status 2; they never print a traceback.
"""

# The groups register their commands on import, in this order (the order of ``sugar --help``).
from sugar.cli import data, teachers, train, retrieval, evaluation, serve  # noqa: F401  # isort: skip
from sugar.cli import edit  # noqa: F401  # isort: skip  (issue 23: sugar edit)
from sugar.cli import control  # noqa: F401  # isort: skip
from sugar.cli.app import app, main

__all__ = ["app", "main"]
