"""Exceptions raised by facepcl. Each message names the input, the problem and the fix."""

from __future__ import annotations


class FacePCLError(Exception):
    """Base class of facepcl's own errors."""


class ModelLoadError(FacePCLError, ValueError):
    """Weights or config could not be found, read or matched to the network."""


class CheckpointError(ModelLoadError):
    """A checkpoint given to :func:`facepcl.convert_checkpoint` is not an official PCL checkpoint."""


class ImageLoadError(FacePCLError, ValueError):
    """An input could not be turned into an image (corrupt, truncated, empty, wrong mode, too large)."""


class OutputError(FacePCLError):
    """An output file or folder cannot be written as asked (it exists, it is a file, the disk is full)."""


class NoFaceError(FacePCLError):
    """No face was found in an image and ``on_no_face='raise'`` was asked for."""


class MissingExtraError(FacePCLError, ImportError):
    """A feature needs an optional part of facepcl that is not installed; the message names the ``pip install``."""


class MultiFrameWarning(UserWarning):
    """An animated or multi-page image file was read: only its first frame is used."""
