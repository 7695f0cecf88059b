"""``python -m facepcl.train CONFIG [key=value ...]`` (and ``torchrun -m facepcl.train``): ``facepcl train``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
