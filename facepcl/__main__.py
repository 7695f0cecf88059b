"""``python -m facepcl`` runs the command line (also under torchrun)."""

from .cli import run

run()
