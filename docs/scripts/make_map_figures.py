"""Draw the documentation's embedding maps with ``facepcl embed`` and ``facepcl plot``.

The faces are the two public-domain example portraits in 40 synthetic views
(turned -30 to +30 degrees, mirrored or not, two lightings; see
``_views.py``). Three pictures:

- ``docs/img/map-face.png``: face features F_f coloured by person;
- ``docs/img/map-pose.png``: pose features F_p coloured by yaw;
- ``docs/img/map-pose-by-person.png``: pose features F_p coloured by person.

With a model whose codes come apart, the face map groups by person and the
pose map by yaw, whoever the person. Run with a trained model (default: the
bundled ``pcl-demo``)::

    python docs/scripts/make_map_figures.py [--model pcl-demo] [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from facepcl.cli import main as facepcl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _views import make_views

OUT = Path(__file__).resolve().parents[1] / "img"
MAPS = (("map-face.png", "face", "person"), ("map-pose.png", "pose", "yaw"),
        ("map-pose-by-person.png", "pose", "person"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pcl-demo", help="a trained model (default pcl-demo)")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--device", default=None)
    parser.add_argument("--method", default="auto", help="projection: auto, pca, tsne or umap (default auto)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        labels = make_views(Path(tmp) / "views")
        emb = str(Path(tmp) / "embeddings")
        embed = ["embed", str(labels.parent), "-o", emb, "--model", args.model, "--max-faces", "1", "-q"]
        if facepcl(embed + (["--device", args.device] if args.device else [])):
            return 1
        for name, features, colour in MAPS:
            # The Pillow renderer, so that the pictures do not depend on whether matplotlib is installed.
            code = facepcl(["plot", emb, "-o", str(args.out_dir / name), "--features", features, "--labels",
                            str(labels), "--color-by", colour, "--method", args.method, "--renderer", "pil",
                            "--size", "1200x900"])
            if code:
                return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
