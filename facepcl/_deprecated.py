"""Old option names and values that keep working, with a DeprecationWarning (docs/names.md lists them).

One place maps them, so every entry point (FaceDetector, heads, evaluation
and their YAML/JSON configs) accepts the same old spellings in the same way.
Files written by older facepcl versions (config.json, head.json) are read
through these too, but without a warning: a user cannot edit a published file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

# The old ``align`` option of heads and evaluation, by value -> ``detect``.
ALIGN_TO_DETECT = {"none": False, "detect": True}


def rename_options(options: Mapping[str, Any], renamed: Mapping[str, str], where: str, *,
                   warn: bool = True, stacklevel: int = 3) -> dict[str, Any]:
    """A copy of ``options`` with old names replaced by new ones (a DeprecationWarning each, if ``warn``).

    Args:
        options: Keyword arguments or config keys as given.
        renamed: Old name -> new name.
        where: What to name in the warning and errors (e.g. ``"FaceDetector"``).
        warn: False for files written by older versions (read silently).
        stacklevel: Passed to :func:`warnings.warn` (3: the caller's caller).

    Raises:
        TypeError: An old name and its new name were both given.
    """
    out = dict(options)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(f"{where}: got both {old!r} and {new!r}; give only {new!r} ({old!r} is its old name)")
        if warn:
            warnings.warn(f"{where}: {old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


def detect_from_align(align: Any, where: str, *, warn: bool = True, stacklevel: int = 3) -> bool:
    """``detect`` for an old ``align`` value: "detect" -> True, "none" -> False.

    Raises:
        ValueError: Any other value.
    """
    if align not in ALIGN_TO_DETECT:
        raise ValueError(f"{where}: align must be 'none' or 'detect' (deprecated; use detect=True|False), "
                         f"got {align!r}")
    if warn:
        warnings.warn(f"{where}: align={align!r} is deprecated, use detect={ALIGN_TO_DETECT[align]}",
                      DeprecationWarning, stacklevel=stacklevel)
    return ALIGN_TO_DETECT[align]


def options_with_detect(options: Mapping[str, Any], where: str, *, warn: bool = True,
                        stacklevel: int = 4) -> dict[str, Any]:
    """A copy of config/keyword ``options`` where an old ``align`` entry became ``detect``.

    Raises:
        TypeError: Both ``align`` and ``detect`` were given.
        ValueError: ``align`` has a value other than "none" or "detect".
    """
    out = dict(options)
    if "align" in out:
        if "detect" in out:
            raise TypeError(f"{where}: got both 'align' and 'detect'; give only 'detect' ('align' is its old name)")
        out["detect"] = detect_from_align(out.pop("align"), where, warn=warn, stacklevel=stacklevel)
    return out


def renamed_keywords(where: str, deprecated: Mapping[str, Any], renamed: Mapping[str, str],
                     current: Mapping[str, Any], defaults: Mapping[str, Any], *,
                     stacklevel: int = 4) -> dict[str, Any]:
    """The current keyword values of a function that also takes old names through ``**deprecated``.

    Args:
        where: The function, for messages.
        deprecated: The ``**kwargs`` it received (only old names are allowed).
        renamed: Old name -> new name.
        current: New name -> value received.
        defaults: New name -> its default: a value equal to it counts as not given.
        stacklevel: For the warning (4: the caller of the function that calls this).

    Returns:
        New name -> value, old names applied.

    Raises:
        TypeError: An unknown keyword, or an old name together with its new name.
    """
    unknown = sorted(set(deprecated) - set(renamed))
    if unknown:
        raise TypeError(f"{where} got unexpected keyword arguments {unknown}")
    given = {k: v for k, v in current.items() if k not in defaults or v != defaults[k]}
    return {**current, **rename_options(given | dict(deprecated), renamed, where, stacklevel=stacklevel)}
