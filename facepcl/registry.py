"""A small registry of named models: where each one lives and under which licence.

A source is one of:

- ``package:NAME``: a folder shipped inside facepcl (``facepcl/weights/NAME``);
- ``hf-hub:ORG/NAME``: a Hugging Face Hub repository (pinned by ``revision``);
- ``local-dir:PATH``: a folder on disk (``~`` and ``$VARS`` are expanded
  when the name is resolved, so ``$FACEPCL_HOME`` works).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._utils.paths import BUNDLED_WEIGHTS, facepcl_home


@dataclass(frozen=True)
class ModelInfo:
    """One registered model.

    Attributes:
        name: Short name passed to :func:`facepcl.load`.
        source: ``package:``, ``hf-hub:`` or ``local-dir:`` location.
        revision: Hub revision (commit, tag or branch) to pin, or None.
        license: Licence of the weights.
        description: One line on what the model is.
        how_to_get: What to do when the weights are not there yet.
    """

    name: str
    source: str
    revision: str | None = None
    license: str = "unknown"
    description: str = ""
    how_to_get: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def location(self) -> tuple[str, str]:
        """``(kind, where)`` with kind in {"package", "hf-hub", "local-dir"} and vars expanded."""
        kind, _, where = self.source.partition(":")
        if kind == "package":
            return kind, str(BUNDLED_WEIGHTS / where)
        if kind == "local-dir":
            if "$FACEPCL_HOME" in where or "${FACEPCL_HOME}" in where:
                where = where.replace("${FACEPCL_HOME}", "$FACEPCL_HOME")
                where = where.replace("$FACEPCL_HOME", str(facepcl_home()))
            return kind, os.path.expanduser(os.path.expandvars(where))
        if kind == "hf-hub":
            return kind, where
        raise ValueError(f"model {self.name!r}: unknown source kind in {self.source!r}")

    def available(self) -> bool:
        """Whether the weights are on this machine without a download (Hub models: False)."""
        kind, where = self.location()
        return kind != "hf-hub" and os.path.isfile(os.path.join(where, "model.safetensors"))


DEFAULT_MODEL = "pcl-demo"

_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo, *, overwrite: bool = False) -> None:
    """Add a model to the registry so that :func:`facepcl.load` resolves its name."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"a model named {info.name!r} is already registered; pass overwrite=True")
    info.location()  # validates the source kind
    _REGISTRY[info.name] = info


def list_models() -> list[ModelInfo]:
    """All registered models, in registration order."""
    return list(_REGISTRY.values())


def get_model_info(name: str) -> ModelInfo | None:
    """The registry entry for ``name``, or None."""
    return _REGISTRY.get(name)


register_model(ModelInfo(
    name="pcl-demo",
    source="package:pcl-demo",
    license="Apache-2.0",
    description="facepcl's demonstration model, trained with facepcl.train on a few real face videos; "
                "ships inside the package for offline use. Not the paper's model.",
    tags=("bundled", "default"),
))
register_model(ModelInfo(
    name="pcl-vox-official",
    source="local-dir:$FACEPCL_HOME/models/pcl-vox-official",
    license="unknown (the authors published no licence for code or weights)",
    description="The authors' VoxCeleb1 PCL checkpoint (epoch 801, best.pth), converted to the facepcl format.",
    how_to_get="download best.pth from the links in github.com/DreamMr/PCL, then run "
               "`facepcl convert best.pth $FACEPCL_HOME/models/pcl-vox-official` "
               "(FACEPCL_HOME defaults to $HF_HOME/facepcl)",
    tags=("official",),
))
