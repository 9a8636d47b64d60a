"""``python -m sugar.cli`` (e.g. under ``torchrun``)."""

from sugar.cli import main

main()
