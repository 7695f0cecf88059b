"""Saving, loading and publishing heads in the facepcl Hub format.

A head lives in a folder ``head-<name>/`` holding ``head.json`` (the
:class:`HeadSpec`) and ``head.safetensors`` (the head network's weights).
The folder sits next to an encoder's ``config.json`` and
``model.safetensors`` (a model folder or Hub repository may hold several
heads), or stands alone. Loading is strict like :mod:`facepcl.hub`:
missing, unexpected or mis-shaped keys are errors naming them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._utils.atomic import atomic_write
from .._utils.device import resolve_device
from .._utils.validate import read_json_file
from .._utils.version import __version__
from ..errors import ModelLoadError
from ._spec import HeadSpec, TaskHead

HEAD_CONFIG = "head.json"
HEAD_WEIGHTS = "head.safetensors"
PREFIX = "head-"


def head_dirname(name: str) -> str:
    """Folder name of head ``name``: ``head-<name>``."""
    return f"{PREFIX}{name}"


def save_head(head: TaskHead, directory: str | os.PathLike) -> Path:
    """Write ``directory/head-<name>/{head.json, head.safetensors}``.

    Args:
        head: The head to save.
        directory: A model folder (or any folder); created if needed.

    Returns:
        The head folder.
    """
    out = Path(directory) / head_dirname(head.spec.name)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.net.state_dict().items()}
    spec = head.spec.to_dict()
    spec["facepcl_version"] = __version__
    atomic_write(out / HEAD_WEIGHTS, lambda p: save_file(state, p, metadata={"format": "pt", "head": head.spec.name}))
    atomic_write(out / HEAD_CONFIG, lambda p: Path(p).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8"))
    return out


def list_heads(folder: str | os.PathLike) -> list[str]:
    """Names of the heads stored in a local model folder (its ``head-*/head.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(d.name[len(PREFIX):] for d in folder.iterdir()
                  if d.is_dir() and d.name.startswith(PREFIX) and (d / HEAD_CONFIG).is_file())


def load_head(source: str | os.PathLike, name: str | None = None, *, revision: str | None = None,
              cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None,
              token: str | bool | None = None, device: str | torch.device | None = None) -> TaskHead:
    """Load a head.

    Args:
        source: A head folder (holding ``head.json``), a model folder holding
            ``head-<name>/`` folders, or a Hub repository id ``ORG/NAME``
            (``hf-hub:ORG/NAME`` also accepted).
        name: Which head of a model folder or repository; may be omitted
            when a local folder holds exactly one.
        revision: As for :func:`facepcl.load`.
        cache_dir: As for :func:`facepcl.load`.
        local_files_only: As for :func:`facepcl.load`.
        token: As for :func:`facepcl.load`.
        device: Where to put the head (None: CUDA if available, else CPU).

    Returns:
        A :class:`TaskHead` in eval mode.

    Raises:
        ModelLoadError: Not found, not a head, or weights that do not match
            ``head.json`` (the message names the keys).
    """
    folder = _resolve(source, name, revision, cache_dir, local_files_only, token)
    spec_path = folder / HEAD_CONFIG
    try:
        data = read_json_file(spec_path, "the head description")
        if not isinstance(data, dict):
            raise ValueError(f"{spec_path}: holds a JSON {type(data).__name__}, not an object")
        spec = HeadSpec.from_dict(data, str(spec_path))
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    weights = folder / HEAD_WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"head folder {folder} has no {HEAD_WEIGHTS}; write heads with save_head")
    with torch.device("meta"):  # the network's shapes, without allocating it
        expected = {k: tuple(v.shape) for k, v in TaskHead(spec).net.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
            _check_shapes(expected, found, weights, spec)  # before any tensor is read
            state = {k: f.get_tensor(k) for k in found}
    except ModelLoadError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e}); the file "
                             "is corrupt or truncated: save or download it again") from e
    head = TaskHead(spec)
    head.net.load_state_dict(state, strict=True)
    return head.to(resolve_device(device)).eval()


def _check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], weights: Path,
                  spec: HeadSpec) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k}: file {found[k]} vs head {expected[k]}"
                    for k in set(found) & set(expected) if found[k] != expected[k])
    problems = [f"{what}: {', '.join(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", shapes)) if keys]
    if problems:
        raise ModelLoadError(f"{weights}: weights do not match the {spec.kind} head described in {HEAD_CONFIG} "
                             f"(in_dim {spec.in_dim}, out_dim {spec.out_dim}); " + "; ".join(problems))


def _resolve(source, name, revision, cache_dir, local_files_only, token) -> Path:
    text = str(source)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:"):]
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        if (path / HEAD_CONFIG).is_file():
            if name is not None and path.name != head_dirname(name):
                raise ModelLoadError(f"{path} is the head folder {path.name!r}, not {head_dirname(name)!r}")
            return path
        heads = list_heads(path)
        if name is None:
            if len(heads) != 1:
                raise ModelLoadError(f"model folder {path} holds heads {heads}; name the one to load "
                                     "(head=NAME)" if heads else f"folder {path} holds no head ({HEAD_CONFIG} or "
                                     f"{PREFIX}<name>/{HEAD_CONFIG}); train one with `facepcl finetune`")
            name = heads[0]
        if name not in heads:
            raise ModelLoadError(f"model folder {path} has no head {name!r} (it holds {heads})")
        return path / head_dirname(name)
    repo = text[len("hf-hub:"):] if text.startswith("hf-hub:") else text
    if "/" not in repo or path.exists():
        raise ModelLoadError(f"head source {text!r} is neither a folder nor a Hub id ORG/NAME")
    if name is None:
        raise ModelLoadError(f"name the head to load from Hub repository {repo} (head=NAME, e.g. 'fer')")
    return _download(repo, name, revision, cache_dir, local_files_only, token)


def _download(repo, name, revision, cache_dir, local_files_only, token) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    kwargs = {"repo_id": repo, "revision": revision, "cache_dir": cache_dir, "token": token,
              "subfolder": head_dirname(name), "library_name": "facepcl", "library_version": __version__}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    paths = []
    for fname in (HEAD_CONFIG, HEAD_WEIGHTS):
        try:
            paths.append(Path(hf_hub_download(filename=fname, **kwargs)))
        except RepositoryNotFoundError as e:
            raise ModelLoadError(f"Hub repository {repo} was not found (or is private; pass token=)") from e
        except EntryNotFoundError as e:
            raise ModelLoadError(f"Hub repository {repo} has no {head_dirname(name)}/{fname}: it holds no head "
                                 f"named {name!r}") from e
        except LocalEntryNotFoundError as e:
            raise ModelLoadError(f"{head_dirname(name)}/{fname} of {repo} is not cached and the Hub cannot be "
                                 "reached (offline); download it once while online") from e
    if paths[0].parent != paths[1].parent:
        raise ModelLoadError(f"{repo}: head files resolved to different snapshots; pin revision=")
    return paths[0].parent


def push_head_to_hub(head: TaskHead, repo_id: str, *, model=None, revision: str | None = None,
                     private: bool | None = None, token: str | None = None, commit_message: str | None = None,
                     create_pr: bool = False) -> str:
    """Upload a head (``head-<name>/``) to a Hub repository, optionally with its encoder.

    Args:
        head: The head.
        repo_id: ``ORG/NAME``; created if needed. Pushing into the encoder's
            own repository puts the head next to it.
        model: Also upload this encoder (``config.json``, ``model.safetensors``,
            model card); needed when the encoder was fine-tuned.
        revision: As for :func:`facepcl.push_to_hub`.
        private: As for :func:`facepcl.push_to_hub`.
        token: As for :func:`facepcl.push_to_hub`.
        create_pr: As for :func:`facepcl.push_to_hub`.
        commit_message: Default "Upload facepcl head <name>".

    Returns:
        The URL of the commit (or pull request).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if model is not None:
            from ..model._save import save_pretrained

            save_pretrained(model, tmp)
        save_head(head, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload facepcl head {head.spec.name}")
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
