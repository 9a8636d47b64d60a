"""``sugar serve``: the command lives in :mod:`sugar.serve.command` (issue 19)."""

from __future__ import annotations

from sugar.cli.app import app, user_errors
from sugar.serve.command import serve_command

app.command("serve")(user_errors(serve_command))
