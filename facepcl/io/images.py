"""The one image loader: anything a user may hand us becomes an RGB ``uint8`` array.

Accepted inputs (see :func:`load_image`):

- a file path (``str`` or ``os.PathLike``) or the encoded bytes of a file
  (``bytes``, ``bytearray``, ``memoryview``), decoded with Pillow; the EXIF
  orientation tag is applied, so the pixels are upright as a viewer shows them;
- a ``PIL.Image.Image``;
- a ``numpy.ndarray`` of shape ``H x W``, ``H x W x 1``, ``H x W x 3`` or
  ``H x W x 4``, dtype ``uint8`` (0-255), ``uint16`` (0-65535) or floating
  point (0-1); RGB(A) channel order unless ``color_order="BGR"`` is given
  (for OpenCV's ``cv2.imread`` output);
- a ``torch.Tensor`` of shape ``C x H x W`` (torchvision's layout, C in 1, 3, 4)
  or ``H x W``, with the same dtypes and ranges.

Modes and scaling:

- grayscale (``L``, ``1``, ``I;16``, ``I``) is repeated into three channels;
- palette images and images with transparency (``P``, ``PA``, ``LA``,
  ``RGBA``, 4-channel arrays) are composited over black, the colour the
  alignment warp also uses for pixels outside the image;
- 16-bit values are divided by 257 (65535 -> 255) and rounded; floats are
  multiplied by 255 and rounded, and must lie in [0, 1];
- 32-bit float images (Pillow mode ``F``) have no defined value range and are
  refused: scale them to [0, 1] yourself and pass a numpy array.

Decompression bombs: an encoded image whose header announces more pixels
than ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's own knob, about 89.5 million by
default) raises :class:`~facepcl.errors.ImageLoadError` before any pixel is
decoded. To read larger images, raise that limit:
``PIL.Image.MAX_IMAGE_PIXELS = 300_000_000`` (``None`` disables the check).

Files: only regular files are read. Devices (``/dev/zero``), FIFOs and
sockets are refused by type before anything is read, and a file larger than
:data:`MAX_FILE_BYTES` (512 MiB, far above any real photo) is refused before
it is read whole; raise ``facepcl.io.images.MAX_FILE_BYTES`` to read larger files.

Reduced-scale decoding (bounded memory for huge JPEGs): with ``min_side``,
a JPEG file with more than :data:`REDUCE_ABOVE_PIXELS` pixels (64 million;
ordinary photos, up to 61 MP from today's cameras, decode as before) is
decoded by the JPEG decoder's DCT scaling at 1/2, 1/4 or 1/8 of its size,
the smallest that keeps the longer side at least ``min_side`` pixels, so
its array takes 4, 16 or 64 times less memory. The result is a
:class:`ReducedImage`, which records the scale:
:func:`to_original` maps points on it back to the file's pixels (what
:class:`facepcl.FaceEmbedder` reports). Set
``facepcl.io.images.REDUCE_ABOVE_PIXELS = None`` to always decode in full.

Multi-frame files (animated GIF, WebP or PNG, multi-page TIFF): the first
frame is used, and a :class:`~facepcl.errors.MultiFrameWarning` says so.

Every failure raises :class:`~facepcl.errors.ImageLoadError` naming the input.
The functions keep no state, so they can run in worker threads or processes.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError, MultiFrameWarning

MAX_FILE_BYTES = 512 << 20  # bytes; a knob like PIL.Image.MAX_IMAGE_PIXELS (None disables the check)
# JPEGs with more pixels than this may be decoded at 1/2, 1/4 or 1/8 scale when the caller says what
# resolution it needs (``min_side``); None disables reduced decoding.
REDUCE_ABOVE_PIXELS = 64_000_000
COLOR_ORDERS = ("RGB", "BGR")
_BYTES = (bytes, bytearray, memoryview)
# Pillow modes we convert; anything else is refused with a clear message.
_GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_COLOR_MODES = {"RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_FLOAT_TOLERANCE = 1e-3  # floats this far outside [0, 1] are rounding noise, not another range


def describe(source: Any) -> str:
    """A short human-readable name for an input, used in errors and failure records.

    Args:
        source: Anything :func:`load_image` accepts (or not).

    Returns:
        The path for files, else the type with its size, e.g.
        ``"<numpy.ndarray shape=(480, 640, 3) dtype=uint8>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, _BYTES):
        return f"<{type(source).__name__} of {memoryview(source).nbytes} bytes>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or ""
        where = f" from {name}" if name else ""
        return f"<PIL.Image mode={source.mode} size={source.size[0]}x{source.size[1]}{where}>"
    if isinstance(source, np.ndarray):
        return f"<numpy.ndarray shape={tuple(source.shape)} dtype={source.dtype}>"
    if _is_tensor(source):
        return f"<torch.Tensor shape={tuple(source.shape)} dtype={source.dtype}>"
    return f"<{type(source).__module__}.{type(source).__qualname__}>"


class ReducedImage(np.ndarray):
    """An image decoded at reduced scale (see the module docstring): an ``(h, w, 3)`` uint8 array plus its mapping.

    Pixel ``(x, y)`` of this array (pixel-edge coordinates) is pixel
    ``(scale * x + origin[0], scale * y + origin[1])`` of the upright
    image in the file, whose size is ``original_size`` ``(W, H)``. Arrays
    derived from it (slices, copies) carry no mapping (scale 1).

    Attributes:
        scale: 2, 4 or 8: original pixels per decoded pixel.
        origin: ``(ox, oy)``: 0, or minus the few pixels (fewer than
            ``scale``) by which the JPEG's last, partial block overhangs an
            edge that EXIF orientation moved to the top or left.
        original_size: ``(W, H)`` of the upright image in the file.
    """

    scale: int
    origin: tuple[float, float]
    original_size: tuple[int, int]

    def __array_finalize__(self, obj: Any) -> None:
        # Views and copies start with no mapping; load_image sets it on the array it returns.
        self.scale, self.origin = 1, (0.0, 0.0)
        self.original_size = (self.shape[1], self.shape[0]) if self.ndim >= 2 else (0, 0)

    def __reduce__(self) -> tuple:
        # Pickling (worker processes) keeps the mapping.
        fn, args, state = super().__reduce__()  # type: ignore[misc]
        return fn, args, (state, self.scale, self.origin, self.original_size)

    def __setstate__(self, state: tuple) -> None:
        base, self.scale, self.origin, self.original_size = state
        super().__setstate__(base)


def reduce_above(reduce_any: bool) -> int | None:
    """JPEGs over this many pixels may decode at reduced scale: 0 with ``reduce_any`` (see :func:`load_image`),
    else :data:`REDUCE_ABOVE_PIXELS`; None (reduced decoding off) either way when that is None."""
    return 0 if reduce_any and REDUCE_ABOVE_PIXELS is not None else REDUCE_ABOVE_PIXELS


def to_original(image: np.ndarray, bbox: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and landmarks found on ``image`` in the pixels of the file it was decoded from.

    Args:
        image: What :func:`load_image` returned.
        bbox: ``(N, 4)`` x1, y1, x2, y2 on ``image``.
        kps: ``(N, K, 2)`` landmarks on ``image`` (NaN stays NaN).

    Returns:
        ``(bbox, kps)``: new float32 arrays for a :class:`ReducedImage`,
        else the arrays given, unchanged.
    """
    if not isinstance(image, ReducedImage) or image.scale == 1:
        return bbox, kps
    s, (ox, oy) = image.scale, image.origin
    shift = np.array([ox, oy], np.float64)
    bbox = (np.asarray(bbox, np.float64) * s + np.tile(shift, 2)).astype(np.float32)
    kps = (np.asarray(kps, np.float64) * s + shift).astype(np.float32)
    return bbox, kps


def original_size(image: np.ndarray) -> tuple[int, int]:
    """``(W, H)`` of the file ``image`` was decoded from (its own size unless it is a :class:`ReducedImage`)."""
    if isinstance(image, ReducedImage) and image.scale != 1:
        return image.original_size
    return image.shape[1], image.shape[0]


def min_decode_side(detect_size: int | None, crop_size: int) -> int:
    """The longer side a decoded image needs so that reduced-scale decoding loses nothing the model sees.

    With detection, the detector works at ``detect_size`` (its ``max_size``)
    and finds faces from about 16 of those pixels; keeping
    ``detect_size * crop_size / 16`` pixels (2560 for 640 and 64 px crops;
    at least twice ``detect_size``, where the detector re-examines weak
    candidates) leaves every face it can find at least ``crop_size`` pixels
    across, so the aligned crop is made from at least as many pixels as it
    has. Without detection the whole image becomes the crop: four times the
    crop side.

    Args:
        detect_size: The detector's ``max_size``, or None when nothing is detected.
        crop_size: The largest crop side used (the crop size, or a task head's input size).
    """
    if detect_size is None:
        return 4 * int(crop_size)
    return max(2 * int(detect_size), -(-int(detect_size) * int(crop_size) // 16))


def to_decoded(image: np.ndarray, bbox: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`to_original`: file pixels -> pixels of ``image`` (for drawing on it)."""
    if not isinstance(image, ReducedImage) or image.scale == 1:
        return bbox, kps
    s, (ox, oy) = image.scale, image.origin
    shift = np.array([ox, oy], np.float64)
    bbox = ((np.asarray(bbox, np.float64) - np.tile(shift, 2)) / s).astype(np.float32)
    kps = ((np.asarray(kps, np.float64) - shift) / s).astype(np.float32)
    return bbox, kps


def load_image(source: Any, *, color_order: str = "RGB", name: str | None = None,
               min_side: int | None = None, reduce_any: bool = False) -> np.ndarray:
    """Turn one input into a canonical RGB image.

    Args:
        source: A path, encoded bytes, PIL image, numpy array or torch tensor
            (see the module docstring for shapes, dtypes and ranges).
        color_order: Channel order of numpy arrays and tensors with 3 or 4
            channels: "RGB" (default) or "BGR" (OpenCV). Files and PIL images
            carry their own colour order and ignore this.
        name: How to call the input in error messages (default: :func:`describe`).
        min_side: The longer side, in pixels, the caller needs. A JPEG file
            (path or bytes) over :data:`REDUCE_ABOVE_PIXELS` pixels is then
            decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose longer
            side is at least this. None (default): always full size.
        reduce_any: With ``min_side``, decode *any* JPEG at reduced scale when
            its longer side allows it, not only those over
            :data:`REDUCE_ABOVE_PIXELS` (the fast path's choice: decoding at
            1/2 scale takes about a quarter of the time). ``REDUCE_ABOVE_PIXELS = None``
            still turns reduced decoding off.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(H, W, 3)``, RGB, upright;
        a :class:`ReducedImage` when decoded at reduced scale.

    Raises:
        ImageLoadError: The input cannot be read or is not a supported image;
            the message names the input, the problem and the fix.
    """
    order = str(color_order).upper()
    if order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    label = name or describe(source)
    if isinstance(source, (str, os.PathLike)):
        return _decoded(_open_bytes(read_file(source, label), label, min_side, reduce_any), label)
    if isinstance(source, _BYTES):
        return _decoded(_open_bytes(bytes(source), label, min_side, reduce_any), label)
    if isinstance(source, Image.Image):
        return _from_pil(_upright(source, label), label)
    if isinstance(source, np.ndarray):
        return _from_array(source, label, order, channels_last=True)
    if _is_tensor(source):
        t = source.detach().cpu()
        if t.dtype.is_floating_point:
            t = t.float()  # numpy has no bfloat16
        return _from_array(t.numpy(), label, order, channels_last=False)
    raise ImageLoadError(f"{label}: not an image input; pass a path, bytes, a PIL image, a numpy array or a "
                         "torch tensor")


def _is_tensor(x: Any) -> bool:
    # Checked by name so that the loader works (and pickles) without importing torch.
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "shape")


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def read_file(path: str | os.PathLike, label: str | None = None) -> bytes:
    """The bytes of a regular file, refusing devices, FIFOs, folders and files over :data:`MAX_FILE_BYTES`.

    The file is opened without blocking (a FIFO with no writer would hang a
    plain open) and its type and size are checked on the open descriptor,
    before anything is read.

    Raises:
        ImageLoadError: The path is missing, not a regular file, too large or unreadable.
    """
    label = label or describe(path)
    fd = _open_regular(path, label)
    limit = MAX_FILE_BYTES
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise _too_large(label, size, limit)
        try:
            data = f.read() if limit is None else f.read(limit + 1)  # the file may grow after the check
        except OSError as e:
            raise ImageLoadError(f"{label}: cannot read the file ({e.strerror or e})") from e
    if limit is not None and len(data) > limit:
        raise _too_large(label, len(data), limit)
    return data


def check_regular_file(path: str | os.PathLike, label: str | None = None) -> None:
    """Raise ImageLoadError unless ``path`` is an existing regular file (checked without reading it)."""
    os.close(_open_regular(path, label or describe(path)))


def _open_regular(path: str | os.PathLike, label: str) -> int:
    p = os.path.expanduser(os.fspath(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise ImageLoadError(f"{label}: no such file; check the path") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{label}: is a folder, not an image file; pass the files inside it") from None
    except ValueError as e:  # an embedded NUL character
        raise ImageLoadError(f"{label}: not a valid file name ({e})") from None
    except OSError as e:  # permissions, a name component over the file system's limit, a symlink loop, ...
        raise ImageLoadError(f"{label}: cannot open the file ({e.strerror or e}); check the path and its "
                             "permissions") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise ImageLoadError(f"{label}: cannot read the file ({e.strerror or e})") from None
    if stat.S_ISREG(mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(mode):
        raise ImageLoadError(f"{label}: is a folder, not an image file; pass the files inside it")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise ImageLoadError(f"{label}: is {kind}, not a regular file; facepcl reads only regular image and video "
                         "files (copy the data into a file first)")


def _too_large(label: str, size: int, limit: int) -> ImageLoadError:
    return ImageLoadError(f"{label}: file too large ({size:,} bytes; limit facepcl.io.images.MAX_FILE_BYTES = "
                          f"{limit:,}). If the file is a trusted image, raise the limit: "
                          "`facepcl.io.images.MAX_FILE_BYTES = <bytes>` (None disables the check)")


def _open_bytes(data: bytes, label: str, min_side: int | None = None,
                reduce_any: bool = False) -> tuple[Image.Image, tuple | None]:
    """The decoded, upright image, and its reduced-scale mapping ``(scale, origin, original_size)`` or None."""
    if not data:
        raise ImageLoadError(f"{label}: empty file (0 bytes); the file was not fully written or is not an image")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit: refuse that range too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(img, label, limit)
            animated = bool(getattr(img, "is_animated", False))  # looks at the second frame only
            fmt = img.format
            stored = img.size
            orientation = img.getexif().get(_ORIENTATION, 1) if fmt == "JPEG" else 1
            scale = _draft(img, min_side, reduce_above(reduce_any))
            img.load()
            # exif_transpose reads the EXIF orientation tag and returns an upright copy.
            img = ImageOps.exif_transpose(img)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(label, str(e), limit) from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{label}: not a recognised image format ({len(data)} bytes; Pillow cannot identify "
                             "it); pass a JPEG, PNG, WebP, BMP, TIFF or GIF file") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated", "broken data stream").
        raise ImageLoadError(f"{label}: corrupt or truncated image data ({type(e).__name__}: {e}); re-export or "
                             "re-download the file") from e
    if animated:
        warnings.warn(f"{label}: {fmt or 'this'} file holds several frames (animated or multi-page); only the "
                      "first frame is used. Extract the frames you want as images, or convert it to a video",
                      MultiFrameWarning, stacklevel=4)
    return img, None if scale == 1 else _mapping(scale, stored, img.size, orientation)


def _draft(img: Image.Image, min_side: int | None, limit: int | None) -> int:
    """Ask the JPEG decoder for the smallest DCT scale keeping the longer side >= ``min_side``; the scale set.

    Only for JPEGs of more than ``limit`` pixels (None: never).
    """
    w, h = img.size
    if min_side is None or limit is None or img.format != "JPEG" or w * h <= limit:
        return 1
    s = next((s for s in (8, 4, 2) if -(-max(w, h) // s) >= min_side), 1)
    if s == 1:
        return 1
    img.draft(img.mode, (w // s, h // s))
    config = getattr(img, "decoderconfig", None) or (1,)
    return int(config[0]) if img.size != (w, h) else 1


# EXIF orientation -> (upright x comes from the stored y axis, upright x reversed, upright y reversed),
# following ImageOps.exif_transpose's methods.
_ORIENTATION = 0x0112
_AXES = {1: (False, False, False), 2: (False, True, False), 3: (False, True, True), 4: (False, False, True),
         5: (True, False, False), 6: (True, True, False), 7: (True, True, True), 8: (True, False, True)}


def _mapping(scale: int, stored: tuple[int, int], upright: tuple[int, int], orientation: int) -> tuple:
    """``(scale, origin, original_size)`` of a reduced image (see :class:`ReducedImage`).

    Args:
        scale: The DCT scale the decoder used.
        stored: ``(W, H)`` of the full image as stored in the file.
        upright: ``(w, h)`` of the reduced image after EXIF orientation.
        orientation: The EXIF orientation tag (1-8).

    The DCT-scaled decode maps stored pixel edges exactly (``X = scale *
    x``), its last block padded past the right and bottom edges. An axis
    that EXIF orientation reverses puts that padding at the top or left, so
    its origin moves by the padding.
    """
    swap, rev_x, rev_y = _AXES.get(int(orientation), _AXES[1])
    width, height = (stored[1], stored[0]) if swap else stored
    pad_x, pad_y = scale * upright[0] - width, scale * upright[1] - height
    origin = (-float(pad_x) if rev_x else 0.0, -float(pad_y) if rev_y else 0.0)
    return scale, origin, (width, height)


def _decoded(opened: tuple[Image.Image, tuple | None], label: str) -> np.ndarray:
    img, mapping = opened
    arr = _from_pil(img, label)
    if mapping is None:
        return arr
    out = arr.view(ReducedImage)
    out.scale, out.origin, out.original_size = mapping
    return out


def _upright(img: Image.Image, label: str) -> Image.Image:
    # A PIL image opened by the caller still carries its EXIF orientation; applying it twice is a no-op
    # because exif_transpose removes the tag from the image it returns.
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageLoadError(f"{label}: corrupt or truncated image data ({type(e).__name__}: {e}); re-export or "
                             "re-download the file") from e


def _check_pixels(img: Image.Image, label: str, limit: int | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{label}: the image has zero size ({w}x{h})")
    if limit is not None and w * h > limit:
        raise _bomb_error(label, f"{w}x{h} = {w * h:,} pixels", limit)


def _bomb_error(label: str, detail: str, limit: int | None) -> ImageLoadError:
    return ImageLoadError(f"{label}: image too large ({detail}; limit PIL.Image.MAX_IMAGE_PIXELS = {limit:,}), "
                          "refused as a possible decompression bomb. If the file is trusted, raise the limit: "
                          "`PIL.Image.MAX_IMAGE_PIXELS = <pixels>` (None disables the check)")


def _from_pil(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{label}: the image has zero size ({w}x{h})")
    try:
        if mode == "RGB":
            return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
        if mode == "P":
            # Palette images may carry transparency in their palette: go through RGBA.
            img = img.convert("RGBA")
            mode = "RGBA"
        if mode in _ALPHA_MODES:
            return _composite(np.asarray(img.convert("RGBA")))
        if mode in _GRAY_MODES:
            arr = np.asarray(img)
            if mode == "1":
                arr = arr.astype(np.uint8) * 255
            elif mode != "L":
                arr = _scale_16bit(arr, label)
            return _to_rgb(arr, label, "RGB")
        if mode in _COLOR_MODES:
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageLoadError(f"{label}: corrupt or truncated image data ({type(e).__name__}: {e}); re-export or "
                             "re-download the file") from e
    if mode == "F":
        raise ImageLoadError(f"{label}: unsupported image mode 'F' (32-bit float pixels have no defined range); "
                             "scale the pixels to [0, 1] yourself and pass a float numpy array")
    raise ImageLoadError(f"{label}: unsupported image mode {mode!r}; convert it to RGB first "
                         "(e.g. `img.convert('RGB')`)")


def _scale_16bit(arr: np.ndarray, label: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ImageLoadError(f"{label}: integer pixels outside 0-65535 (min {arr.min()}, max {arr.max()}); "
                             "scale them to uint8 or uint16 first")
    return np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)


def _composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 over black: ``rgb * alpha / 255`` (transparent pixels become black)."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.ascontiguousarray(np.rint(rgb * alpha).astype(np.uint8))


def _from_array(arr: np.ndarray, label: str, order: str, channels_last: bool) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and not channels_last:
        if arr.shape[0] not in (1, 3, 4):
            raise ImageLoadError(f"{label}: a 3-D tensor must be C x H x W with C in (1, 3, 4) (torchvision's "
                                 f"layout); got shape {tuple(arr.shape)}. Permute it with `t.permute(2, 0, 1)`")
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3):
        raise ImageLoadError(f"{label}: expected one image of shape H x W or H x W x C, got {arr.ndim} dimensions "
                             f"{tuple(arr.shape)}; pass a batch as a list of images")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ImageLoadError(f"{label}: unsupported number of channels {arr.shape[2]} (shape {tuple(arr.shape)}); "
                             "expected 1 (gray), 3 (RGB/BGR) or 4 (RGBA/BGRA)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"{label}: zero-size image (shape {tuple(arr.shape)})")
    arr = _to_uint8(arr, label)
    if arr.ndim == 3 and arr.shape[2] == 4:
        if order == "BGR":
            arr = arr[..., [2, 1, 0, 3]]
        return _composite(arr)
    return _to_rgb(arr, label, order)


def _to_uint8(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return _scale_16bit(arr, label)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float32)
        if not np.isfinite(data).all():
            raise ImageLoadError(f"{label}: the array holds NaN or infinite values")
        lo, hi = float(data.min()), float(data.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
            raise ImageLoadError(f"{label}: float pixels must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]; "
                                 "for 0-255 data divide by 255 or convert to uint8 (`arr.astype(np.uint8)`)")
        return np.rint(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageLoadError(f"{label}: unsupported dtype {arr.dtype}; use uint8 (0-255), uint16 (0-65535) or "
                         "float (0-1), e.g. `arr.astype(np.uint8)`")


def _to_rgb(arr: np.ndarray, label: str, order: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif order == "BGR":
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr, dtype=np.uint8)
