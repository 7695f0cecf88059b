"""Step 1 of the data path, shared by every tool that reads inputs: decode and discover.

- :mod:`facepcl.io.images`: any image input (path, bytes, PIL, numpy, tensor) -> upright RGB uint8, bounded;
- :mod:`facepcl.io.inputs`: files, folders, globs and ``@lists`` -> a sorted stream of input items;
- :mod:`facepcl.io.video`: video frames, every N-th, with timestamps;
- :mod:`facepcl.io.stream`: inputs decoded ahead in worker threads, handed over in input order;
- :mod:`facepcl.io.prefetch`: the worker threads themselves;
- :mod:`facepcl.io.ranks`: this process's place among torchrun processes;
- :mod:`facepcl.io.storage`: local folders and object stores (fsspec URLs) behind one store, for inputs and exports.

``facepcl export``, ``facepcl prepare`` and ``facepcl.viz`` import these modules; none of them imports another's
private code.
"""

from .images import describe, load_image

__all__ = ["describe", "load_image"]
