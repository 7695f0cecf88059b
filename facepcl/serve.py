"""``facepcl serve``: face, pose and trunk codes over HTTP (FastAPI + uvicorn, the ``[serve]`` extra).

Endpoints:

- ``POST /embed``: the image as multipart field ``file``; query parameters
  ``features`` (comma-separated subset of face,pose,trunk; default all),
  ``max_faces`` and ``det_threshold``. Answers ``{"faces": [{"bbox", "kps",
  "det_score", "face", "pose", "trunk"}, ...], "model": ..., "encoder_sha256": ...}``:
  the same values as :func:`facepcl.embed` with the same options (float32
  written as JSON numbers, NaN as null).
- ``GET /health``: ``{"status": "ok", "model": ..., "encoder_sha256": ...}``.

Errors are JSON ``{"error": "..."}``: 413 for a body over ``max_body`` bytes
(refused before it is read: by its Content-Length, or as soon as a streamed
body passes the limit), 422 for something that is not an image or a bad
parameter, 503 when ``concurrency`` requests are running and a new one has
waited ``queue_timeout`` seconds for its turn.

Concurrency: requests run in worker threads on one :class:`~facepcl.FaceEmbedder`
(and one model), which is safe to share between threads; at most
``concurrency`` of them compute at a time, so that torch's thread pools do not
oversubscribe the CPU.
"""


import json
import math
import threading
from collections.abc import Sequence
from typing import Any

from ._utils.constants import FEATURES, parse_features
from .errors import FacePCLError, ImageLoadError, MissingExtraError

#: Default largest request body, in bytes.
MAX_BODY = 32 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _limit_body(app: Any, max_body: int) -> Any:
    """ASGI middleware: 413 for a request body over ``max_body`` bytes, before the endpoint reads it."""

    async def limited(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            await _json(send, 413, {"error": f"request body of {int(length):,} bytes is over the server's limit of "
                                             f"{max_body:,} bytes; send a smaller image (or start the server with "
                                             "a larger --max-body-mb)"})
            return
        seen = 0
        refused = False

        async def counting() -> dict:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    # Answer now and tell the application the client is gone; whatever it answers is dropped.
                    refused = True
                    await _json(send, 413, {"error": f"request body is over the server's limit of {max_body:,} "
                                                     "bytes; send a smaller image"})
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not refused:
                await send(message)

        await app(scope, counting, guarded_send)

    return limited


async def _json(send: Any, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def faces_json(result: Any, features: Sequence[str]) -> list[dict[str, Any]]:
    """The faces of an :class:`~facepcl.EmbeddingResult` as JSON-able dicts (NaN -> None)."""
    faces = []
    for i in range(len(result)):
        face = {"bbox": [float(v) for v in result.bbox[i]],
                "kps": [[_number(v) for v in p] for p in result.kps[i]],
                "det_score": _number(float(result.det_score[i]))}
        for f in features:
            face[f] = getattr(result, f)[i].tolist()
        faces.append(face)
    return faces


def _features(value: str | None) -> list[str]:
    return parse_features(value) if value else list(FEATURES)


def create_app(model: Any = None, *, device: str | None = None, max_body: int = MAX_BODY, concurrency: int = 1,
               queue_timeout: float = 30.0) -> Any:
    """The FastAPI application (see the module docstring for the endpoints).

    Args:
        model: A :class:`~facepcl.PCLModel`, or a name / Hub id / folder for
            :func:`facepcl.load` (None: the default model).
        device: Torch device (None: CUDA if available, else CPU).
        max_body: Largest request body in bytes (413 past it).
        concurrency: Requests computed at the same time (the rest wait).
        queue_timeout: Seconds a request waits for its turn before a 503.

    Raises:
        ImportError: The ``[serve]`` extra (fastapi, python-multipart) is not installed.
    """
    try:
        from fastapi import FastAPI, File, Query, UploadFile
        from fastapi.responses import JSONResponse
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise MissingExtraError('facepcl serve needs the serve extra: pip install "facepcl[serve]"') from e
    import facepcl

    from ._utils.digest import encoder_digest
    from .io import load_image

    if concurrency < 1 or max_body < 1:
        raise ValueError(f"concurrency and max_body must be positive, got {concurrency} and {max_body}")
    loaded = model if isinstance(model, facepcl.PCLModel) else facepcl.hub.load(model, device=device)
    digest = encoder_digest(loaded)
    identity = {"model": loaded.config.name, "encoder_sha256": digest}
    slots = threading.BoundedSemaphore(concurrency)
    app = FastAPI(title="facepcl", version=facepcl.__version__,
                  description="Face (F_f), pose (F_p) and trunk (F) embeddings of every face in an image.")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **identity}

    @app.post("/embed")
    def embed(file: UploadFile = File(..., description="the image (any format Pillow reads)"),  # noqa: B008
              features: str | None = Query(None, description="comma-separated subset of face,pose,trunk"),
              max_faces: int | None = Query(None, ge=1), det_threshold: float | None = Query(None, gt=0, lt=1)):
        try:
            chosen = _features(features)
        except ValueError as e:
            return error(422, str(e))
        data = file.file.read()
        name = file.filename or "upload"
        if not data:
            return error(422, f"{name}: the file is empty; send an image in the multipart field 'file'")
        if not slots.acquire(timeout=queue_timeout):
            return error(503, f"the server is busy ({concurrency} requests computing, waited {queue_timeout:g} s); "
                              "retry later")
        try:
            options: dict[str, Any] = {}
            if max_faces is not None:
                options["max_faces"] = max_faces
            if det_threshold is not None:
                options["det_threshold"] = det_threshold
            image = load_image(data, name=f"upload {name!r}")
            result = facepcl.embed(image, model=loaded, **options)
        except ImageLoadError as e:
            return error(422, str(e))
        except (FacePCLError, ValueError) as e:
            return error(422, f"{name}: {e}")
        finally:
            slots.release()
        return {"faces": faces_json(result, chosen), **identity}

    return _limit_body(app, max_body)


def serve(model: Any = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str | None = None,
          max_body: int = MAX_BODY, concurrency: int = 1, queue_timeout: float = 30.0,
          log_level: str = "info") -> None:
    """Run the server until interrupted (binds ``host``: 127.0.0.1 unless told otherwise).

    Args:
        model, device, max_body, concurrency, queue_timeout: As :func:`create_app`.
        host: Address to bind.
        port: TCP port.
        log_level: uvicorn's log level.
    """
    import uvicorn

    uvicorn.run(create_app(model, device=device, max_body=max_body, concurrency=concurrency,
                           queue_timeout=queue_timeout), host=host, port=port, log_level=log_level,
                timeout_keep_alive=5)


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY", "create_app", "faces_json", "serve"]
