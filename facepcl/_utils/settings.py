"""The settings guard of every folder facepcl writes: a run adds to a folder only with the settings that made it.

A folder's settings (what its files depend on: model, sizes, format, ...)
are written once, atomically, as a JSON file; a later run compares its own
with them key by key and refuses to mix. Used by ``facepcl embed``
(``_run.json``) and ``facepcl prepare`` (``_prepare/settings.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from .atomic import atomic_write, write_text


class SettingsError(ValueError):
    """A settings file is damaged, or differs from this run's settings."""


def read_settings(path: str | os.PathLike, fix: str, read: Callable[[], bytes | None] | None = None
                  ) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file.

    Args:
        path: The settings file (named in messages).
        fix: What to do when it is damaged (ends the message).
        read: Returns the file's bytes, None when it does not exist (default:
            read the local file ``path``); e.g. from an object store.

    Raises:
        SettingsError: The file is not a JSON object (garbage, truncated): "PATH is damaged (...); FIX".
    """
    path = os.fspath(path)
    try:
        if read is None:
            with open(path, "rb") as f:
                data: bytes | None = f.read()
        else:
            data = read()
        if data is None:
            return None
        value = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SettingsError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{path} is damaged (not a JSON object); {fix}")
    return value


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: was X, now Y"`` for every key whose value differs, sorted by key."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys]


def guard_settings(path: str | os.PathLike, settings: Mapping[str, Any], *, compare: bool = True,
                   damaged_fix: str, differ: Callable[[list[str]], Exception],
                   read: Callable[[], bytes | None] | None = None,
                   write: Callable[[Callable[[str], object]], object] | None = None) -> None:
    """Compare ``settings`` with those stored in ``path`` (when ``compare``), or store them.

    Args:
        path: The settings file.
        settings: This run's settings (JSON-able).
        compare: Whether the stored settings bind this run (False: the
            folder holds nothing made with them, so they are replaced).
        damaged_fix: What to do when the file is damaged.
        differ: Builds the error raised when they differ, from :func:`settings_diff`'s lines.
        read: Reads the stored file (see :func:`read_settings`; default: the local file).
        write: Stores the file whole, given a function that writes it to a
            local path (default: :func:`~facepcl._utils.atomic.atomic_write` to ``path``).

    Raises:
        SettingsError: The stored file is damaged.
        Exception: ``differ(...)`` when the settings differ.
        OSError: The file cannot be written.
    """
    text = json.dumps(dict(settings), indent=2, sort_keys=True) + "\n"
    if compare:
        old = read_settings(path, damaged_fix, read)
        if old is not None:
            diff = settings_diff(old, json.loads(text))
            if diff:
                raise differ(diff)
            return
    if write is None:
        atomic_write(path, lambda tmp: write_text(tmp, text))
    else:
        write(lambda tmp: write_text(tmp, text))


