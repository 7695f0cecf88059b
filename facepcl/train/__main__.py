"""``python -m facepcl.train CONFIG [key=value ...]`` (also what ``torchrun -m facepcl.train`` runs)."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
