"""``sugar train-control``: a control branch over a trained bundle (:mod:`sugar.control`)."""

from __future__ import annotations

import json

import typer

from sugar.cli.app import ConfigPath, Overrides, Resume, app, user_errors


@app.command("train-control")
@user_errors
def train_control_command(
    config: ConfigPath = None,
    overrides: Overrides = None,
    resume: Resume = False,
) -> None:
    """Train a ControlRetriever-style branch that steers a frozen bundle's query embeddings
    with instructions (rounds with mined hard negatives); writes OUTPUT_DIR/model."""
    from sugar.control.config import load_control_config
    from sugar.control.train import train_control

    cfg = load_control_config(config, overrides or [])
    result = train_control(cfg, resume=resume, say=typer.echo)
    summary = {"run_dir": str(result.run_dir), "bundle": str(result.bundle),
               "step": result.step, "validation": result.validation,
               "seconds": round(result.seconds, 1)}  # fmt: skip
    typer.echo(json.dumps(summary, indent=2))
