"""Writing a model folder: ``config.json``, ``model.safetensors`` and a model card.

Saving needs only a module with ``config`` and ``state_dict()`` (a
:class:`facepcl.PCLModel`), so :mod:`facepcl.model` can call it without
importing the loading side (:mod:`facepcl.hub`), and no import cycle forms.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from .._utils.atomic import atomic_write
from .._utils.constants import COMPONENTS
from .._utils.version import __version__
from ..config import PCLConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *, config: PCLConfig | None = None,
                    model_card: bool = True) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a model card ``README.md``.

    Every component the model holds is saved (encoder, heads, decoder), in
    the parameters' own dtype, so a save/load round trip is bit-exact.

    Args:
        model: The model to save (a :class:`facepcl.PCLModel`).
        save_directory: Folder to write (created if needed).
        config: Config to write instead of ``model.config`` (its components
            are set from the model).
        model_card: Also write ``README.md``.

    Returns:
        The folder.
    """
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config = config or model.config
    present = [c for c in COMPONENTS if c == "encoder" or getattr(model, c, None) is not None]
    config = PCLConfig.from_dict({**config.to_dict(), "components": present, "facepcl_version": __version__})
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={
        "format": "pt", "facepcl_version": __version__, "config_hash": config.hash()}))
    atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(config.to_json(), encoding="utf-8"))
    if model_card:
        card = model_card_text(config, getattr(model, "provenance", None))
        atomic_write(out / CARD_NAME, lambda p: Path(p).write_text(card, encoding="utf-8"))
    return out


def _hub_license(license: str) -> str:
    known = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-sa-4.0", "bsd-3-clause", "cc0-1.0"}
    return license.lower() if license.lower() in known else "other"


def model_card_text(config: PCLConfig, provenance: dict | None = None) -> str:
    """The model card (``README.md``) for a model folder: licence, provenance, preprocessing, usage."""
    pre = config.preprocess
    lines = [
        "---",
        f"license: {_hub_license(config.license)}",
        "library_name: facepcl",
        "tags: [face, self-supervised, contrastive-learning, pcl, feature-extraction]",
        "---",
        "",
        f"# {config.name}",
        "",
        "A PCL (Pose-disentangled Contrastive Learning, Liu et al., CVPR 2023) face encoder in the "
        "[facepcl](https://github.com/facepcl/facepcl) format.",
        "",
        f"- **Licence of the weights:** {config.license}",
        f"- **Source / provenance:** {config.source or 'not recorded'}",
        f"- **Components:** {', '.join(config.components)}",
        f"- **Input:** {config.input_size} px, {pre.color_order} in {pre.value_range}, aligned "
        f"{pre.crop_size}x{pre.crop_size} crops ({pre.interpolation} similarity warp onto a 5-point template)",
        f"- **Features:** trunk F, face F_f and pose F_p, {config.feature_dim} floats each at "
        f"{config.input_size} px",
        f"- **Written by:** facepcl {config.facepcl_version}",
    ]
    if provenance and provenance.get("model_id"):
        lines.append(f"- **Converted or saved from:** {provenance['model_id']}"
                     + (f" @ {provenance['revision']}" if provenance.get("revision") else ""))
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import facepcl",
        "model = facepcl.load(\"<this repo id or folder>\")",
        "result = facepcl.embed(\"photo.jpg\", model=model)",
        "result.face, result.pose, result.trunk  # one row per detected face",
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{liu2023pcl,",
        "  title={Pose-disentangled Contrastive Learning for Self-supervised Facial Representation},",
        "  author={Liu, Yuanyuan and Wang, Wenbin and Zhan, Yibing and Feng, Shaoze and Liu, Kejun and "
        "Chen, Zhe},",
        "  booktitle={CVPR},",
        "  year={2023}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(model: nn.Module, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | None = None, commit_message: str = "Upload facepcl model",
                create_pr: bool = False) -> str:
    """Upload a model to the Hugging Face Hub in the same format as :func:`save_pretrained`.

    Args:
        model: The model to upload.
        repo_id: ``ORG/NAME``; created if it does not exist.
        revision: Branch to push to.
        private: Create the repository as private.
        token: Hub token (default: the logged-in one / ``HF_TOKEN``).
        commit_message: Commit message.
        create_pr: Open a pull request instead of pushing to the branch.

    Returns:
        The URL of the commit (or pull request).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision,
                                 commit_message=commit_message, create_pr=create_pr)
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "model_card_text", "push_to_hub", "save_pretrained"]
