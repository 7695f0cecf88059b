"""The Gradio page of ``facepcl demo``: layout and event wiring only; the work is in :mod:`._analyze`."""

from __future__ import annotations

import os

from ..errors import MissingExtraError
from ._analyze import MAX_UPLOAD_BYTES, Analysis, DemoModel

TITLE = "facepcl demo"
INTRO = ("Upload or drop a photo: every detected face is boxed and numbered, aligned and embedded into PCL's face "
         "(who), pose (head pose) and trunk codes. Everything runs on this machine.")


def photo_input(gr, **kwargs):
    """The page's photo upload: a ``gr.Image`` that hands every upload to the page, even one that is no image.

    Gradio's own image input opens the upload with Pillow before the page
    sees it, and answers a file that is no image with a bare "Error". This
    one passes the uploaded file's path on unchanged (``image_mode=None``:
    no converted copy is written), so the page can say what is wrong with
    it and delete it once analysed. (The instance's ``preprocess`` is
    wrapped rather than subclassed: Gradio writes a ``.pyi`` stub next to
    the module of every component subclass.)
    """
    photo = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = photo.preprocess

    def lenient(payload):
        try:
            return preprocess(payload)
        except Exception:  # not an image: the page's own message says so
            return None if payload is None or payload.path is None else str(payload.path)

    photo.preprocess = lenient
    return photo


def build_demo(model: str | os.PathLike | None = None, *, revision: str | None = None, device: str | None = None,
               index: str | os.PathLike | None = None, k: int = 5, max_upload_bytes: int | None = MAX_UPLOAD_BYTES):
    """The demo page as a ``gradio.Blocks`` (call ``.launch()`` on it, with ``max_file_size=max_upload_bytes``).

    Uploads are analysed, then deleted; other files Gradio keeps for the
    page (pictures shown, embeddings to download) are deleted after an hour.

    Args:
        model: ``facepcl.load`` name, Hub id or folder (None: ``$FACEPCL_MODEL``, else pcl-demo).
        revision: Hub revision to pin.
        device: Torch device.
        index: A ``facepcl index`` folder: show each face's nearest neighbours in it.
        k: Neighbours per face.
        max_upload_bytes: Larger photos are refused with a message (None: no limit).

    Raises:
        ImportError: Gradio is not installed (``pip install "facepcl[demo]"``).
    """
    # Local only: no usage statistics sent anywhere (Gradio reads this when imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as e:
        raise MissingExtraError('facepcl demo needs Gradio: pip install "facepcl[demo]"') from e

    demo_model = DemoModel(model, revision=revision, device=device, index=index, k=k,
                           max_upload_bytes=max_upload_bytes)
    info = demo_model.embedder.info()

    def on_photo(path: str | None):
        a = demo_model.analyze_upload(path)
        choices = list(range(a.count))
        pick_b = 1 if a.count > 1 else 0
        near = demo_model.neighbours(a) if demo_model.index is not None and a.count else (None, "")
        return (a, a.message, a.annotated, [(c, cap) for c, cap in a.crops], a.embeddings,
                a.predictions if any(a.predictions) else None,
                gr.update(choices=choices, value=0 if choices else None),
                gr.update(choices=choices, value=pick_b if choices else None), *near)

    def on_swap(a: Analysis | None, i, j):
        return demo_model.swap(a, 0 if i is None else i, 0 if j is None else j)

    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as app:
        state = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}\n\nModel: `{info.get('model_id')}`")
        with gr.Row():
            photo = photo_input(gr, label="Photo", sources=["upload"], elem_id="facepcl-photo")
            annotated = gr.Image(type="pil", label="Faces, boxes and landmarks", interactive=False,
                                 elem_id="facepcl-annotated")
        status = gr.Markdown("Upload or drop a photo to start.", elem_id="facepcl-status")
        crops = gr.Gallery(label="Aligned crops (what the encoder sees)", columns=8, height=260,
                           elem_id="facepcl-crops")
        with gr.Row():
            download = gr.File(label="Per-face embeddings (.npz: face, pose, trunk, bbox, kps, det_score)",
                               elem_id="facepcl-embeddings")
            heads = gr.JSON(label="Task-head predictions (models with heads)", elem_id="facepcl-heads")
        gr.Markdown("## Pose swap\nDecode the face code of one face with the pose code of the other, and back.")
        with gr.Row():
            face_a = gr.Dropdown(label="face A", choices=[], elem_id="facepcl-face-a")
            face_b = gr.Dropdown(label="face B", choices=[], elem_id="facepcl-face-b")
            swap_btn = gr.Button("Swap poses", elem_id="facepcl-swap")
        swap_msg = gr.Markdown(elem_id="facepcl-swap-msg")
        swap_img = gr.Image(type="pil", label="Swap grid", interactive=False, elem_id="facepcl-swap-grid")
        outputs = [state, status, annotated, crops, download, heads, face_a, face_b]
        if demo_model.index is not None:
            gr.Markdown(f"## Nearest faces in the index ({len(demo_model.index)} faces)")
            near_img = gr.Image(type="pil", label="Each face, then its nearest neighbours by face code",
                                interactive=False, elem_id="facepcl-neighbours")
            near_msg = gr.Markdown(elem_id="facepcl-neighbours-msg")
            outputs += [near_img, near_msg]
        else:
            outputs += [gr.State(None), gr.State("")]
        photo.change(on_photo, inputs=photo, outputs=outputs)
        swap_btn.click(on_swap, inputs=[state, face_a, face_b], outputs=[swap_img, swap_msg])
    return app
