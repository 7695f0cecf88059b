"""The Gradio page of ``facepcl demo``: layout and event wiring only; the work is in :mod:`._analyze`."""

from __future__ import annotations

import os

from ._analyze import Analysis, DemoModel

TITLE = "facepcl demo"
INTRO = ("Upload or drop a photo: every detected face is boxed and numbered, aligned and embedded into PCL's face "
         "(who), pose (head pose) and trunk codes. Everything runs on this machine.")


def build_demo(model: str | os.PathLike | None = None, *, revision: str | None = None, device: str | None = None,
               index: str | os.PathLike | None = None, k: int = 5):
    """The demo page as a ``gradio.Blocks`` (call ``.launch()`` on it).

    Args:
        model: ``facepcl.load`` name, Hub id or folder (None: ``$FACEPCL_MODEL``, else pcl-demo).
        revision: Hub revision to pin.
        device: Torch device.
        index: A ``facepcl index`` folder: show each face's nearest neighbours in it.
        k: Neighbours per face.

    Raises:
        ImportError: Gradio is not installed (``pip install "facepcl[demo]"``).
    """
    # Local only: no usage statistics sent anywhere (Gradio reads this when imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError('facepcl demo needs Gradio: pip install "facepcl[demo]"') from e

    demo_model = DemoModel(model, revision=revision, device=device, index=index, k=k)
    info = demo_model.embedder.info()

    def on_photo(path: str | None):
        a = demo_model.analyze(path)
        choices = list(range(a.count))
        pick_b = 1 if a.count > 1 else 0
        near = demo_model.neighbours(a) if demo_model.index is not None and a.count else (None, "")
        return (a, a.message, a.annotated, [(c, cap) for c, cap in a.crops], a.embeddings,
                a.predictions if any(a.predictions) else None,
                gr.update(choices=choices, value=0 if choices else None),
                gr.update(choices=choices, value=pick_b if choices else None), *near)

    def on_swap(a: Analysis | None, i, j):
        return demo_model.swap(a, 0 if i is None else i, 0 if j is None else j)

    with gr.Blocks(title=TITLE) as app:
        state = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}\n\nModel: `{info.get('model_id')}`")
        with gr.Row():
            photo = gr.Image(type="filepath", label="Photo", sources=["upload"], elem_id="facepcl-photo")
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
