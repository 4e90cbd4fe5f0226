"""hf_maskdp demo: anonymize a clip, see what stays sensitive, budget privacy, classify.

Run it with `hf-maskdp space` or `python spaces/app.py` (http://127.0.0.1:7860).
`build_demo()` builds the Blocks without launching (tests, `hf-maskdp space`); `launch()` builds
and serves it with the upload limits and the example cache allowed.

Every piece of work is a plain function with an `api_name`, so `gradio_client` can call what
the page calls: `image_to_clip`, `anonymize`, `privacy_budget`, `calibrate_noise`, `classify`.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from hf_maskdp import read_anonymized_clip
from hf_maskdp.constants import ACCOUNTANTS, DEFAULT_ACCOUNTANT, STATUS_OK
from hf_maskdp.video import decode_mask, encode_video, load_video_frames, video_fps

DEFAULT_MODEL_DIR = Path("quickstart_output/maskdp_model")  # where `hf-maskdp quickstart` saves its model
MODEL_ENV = "HF_MASKDP_MODEL"  # a local folder or a Hub model id
REFINER_ENV = "HF_MASKDP_REFINER"  # a diffusion refiner; the option shows only when set
CACHE_ENV = "HF_MASKDP_SPACE_CACHE"

MASKDP_SENTENCE = (
    "Training with these settings is (ε, δ)-MaskDP: swapping the sensitive pixels of any one clip "
    "(everything but the rendered avatar) for nothing changes the chance of any trained model by at "
    "most a factor e^ε, plus δ; labels, masks and the avatar's motion are public and not protected."
)


@dataclass
class SpaceLimits:
    """What one request may ask of a small CPU Space."""

    max_upload_mb: float = 50.0
    max_frames: int = 150  # longer clips are refused (the anonymizer runs ~10 frames/s on 2 cores)
    max_pixels: int = 1920 * 1080  # larger frames are refused before decoding (150 4K frames need 3.7 GB)
    work_size: int = 320  # frames are downscaled so the longer side is at most this
    example_frames: int = 24  # clips made from an image


# ----------------------------------------------------------------------------- clips


def image_clip(image: np.ndarray, num_frames: int = 24, size: int = 256) -> np.ndarray:
    """A short pan/zoom clip `(T, size, size, 3)` from one photo: the camera slowly moves in."""
    from PIL import Image

    image = load_video_frames(image)[0]
    h, w = image.shape[:2]
    side = min(h, w)
    photo = Image.fromarray(image)
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        crop = side * (1.0 - 0.2 * t)  # zoom in by 20 %
        cx = w / 2 + (side - crop) * (t - 0.5) * 0.5  # and pan a little
        cy = h / 2
        box = (cx - crop / 2, cy - crop / 2, cx + crop / 2, cy + crop / 2)
        frames.append(np.asarray(photo.resize((size, size), Image.BILINEAR, box=box)))
    return np.stack(frames)


def write_display_mp4(frames: np.ndarray, path: Path, fps: float = 12.0) -> str:
    """Ordinary yuv420p H.264 that browsers play (shown frames are already composed from the stored videos)."""
    encode_video(frames, fps=fps, path=path, lossless=False)
    return str(path)


def mask_overlay(frames: np.ndarray, sensitive: np.ndarray) -> np.ndarray:
    """Tint sensitive pixels red; public (avatar) pixels stay as they are."""
    red = np.array([255, 40, 40], dtype=np.float32)
    out = frames.astype(np.float32)
    out[sensitive] = 0.55 * out[sensitive] + 0.45 * red
    return out.astype(np.uint8)


def read_upload(path: str | None, limits: SpaceLimits) -> tuple[np.ndarray, float, str]:
    """Decode an uploaded clip within `limits`, downscaled to `limits.work_size`; bad input -> gr.Error."""
    import av

    if not path:
        raise gr.Error("No clip: upload a video or an image, or pick an example below.")
    name = Path(path).name
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > limits.max_upload_mb:
        raise gr.Error(
            f"{name} is {size_mb:.0f} MB; this Space takes files up to {limits.max_upload_mb:g} MB. Trim or compress it."
        )
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise gr.Error(
                    f"{name} has no video stream. Upload a video file (mp4, webm, avi, mov) or use the image box."
                )
            stream = container.streams.video[0]
            width, height, frames = stream.width, stream.height, stream.frames
    except av.FFmpegError as err:
        raise gr.Error(
            f"{name} is not a video this Space can read ({err.strerror or err}). Upload an mp4, webm, avi or mov file."
        )
    if width * height > limits.max_pixels:
        raise gr.Error(
            f"{name} is {width}x{height}; frames up to {limits.max_pixels:,} pixels are accepted. Downscale it to 1080p or less."
        )
    if frames > limits.max_frames:
        raise gr.Error(f"{name} has {frames} frames; this Space takes at most {limits.max_frames}. Trim the clip.")
    try:
        clip = load_video_frames(path, max_frames=limits.max_frames + 1)
    except ValueError as err:
        raise gr.Error(f"{name}: {err}")
    if len(clip) > limits.max_frames:  # the container did not say how many frames it holds
        raise gr.Error(
            f"{name} has more than {limits.max_frames} frames; this Space takes at most {limits.max_frames}. Trim the clip."
        )
    note = ""
    longer = max(clip.shape[1:3])
    if longer > limits.work_size:
        from PIL import Image

        scale = limits.work_size / longer
        new = (round(clip.shape[2] * scale), round(clip.shape[1] * scale))
        note = f" (downscaled from {clip.shape[2]}x{clip.shape[1]})"
        clip = np.stack([np.asarray(Image.fromarray(f).resize(new, Image.BILINEAR)) for f in clip])
    return clip, video_fps(path), note


# ----------------------------------------------------------------------------- anonymize


# The renderer's OpenGL (EGL) context only works on the thread that created it, and gradio runs
# each request on any worker thread: every anonymizer is built and called on this one thread.
ANONYMIZER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_maskdp_anonymizer")


@functools.lru_cache(maxsize=4)
def get_anonymizer(body_model: str, seed: int, inpainter: str, refiner: str | None):
    """One anonymizer per option set: its models load once, not on every click."""
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer

    options = dict(body_model=body_model, seed=seed, inpainter=inpainter)
    if refiner:
        options["refiner"] = refiner
    return AvatarAnonymizer(AnonymizerConfig(**options))


def anonymizer_options() -> tuple[list[str], list[str], bool]:
    """Body models and inpainters the anonymizer offers, and whether it can refine (a refiner is configured)."""
    from hf_maskdp.anonymize.body import BODY_MODELS

    can_refine = bool(os.environ.get(REFINER_ENV))
    return sorted(BODY_MODELS, key=lambda name: name != "mannequin"), ["temporal", "opencv"], can_refine


def summarize(row: dict, num_frames: int, size: str, sensitive: np.ndarray, avatar: np.ndarray, seconds: float) -> str:
    status = row.get("anonymization") or "unknown"
    with_avatar = int(avatar.reshape(len(avatar), -1).any(axis=1).sum()) if avatar.size else 0
    lines = [
        f"**Status: `{status}`**",
        f"- frames: {num_frames} at {size}, anonymized in {seconds:.1f} s ({num_frames / max(seconds, 1e-9):.1f} frames/s)",
        f"- people found: {row.get('num_people', 0)}",
        f"- frames with an avatar: {with_avatar}/{num_frames}",
        f"- public (avatar) pixels: {100 * (~sensitive).mean():.1f} %; sensitive: {100 * sensitive.mean():.1f} %",
    ]
    if status != STATUS_OK:
        lines.append(f"- failures: {status}")
    if row.get("video") is None:
        lines.append("- the anonymized video is **withheld**: it may still show a real person.")
    return "\n".join(lines)


def anonymize(
    video_path, body_model, seed, inpainter, refine, limits: SpaceLimits, progress=gr.Progress(track_tqdm=True)
):
    progress(0.0, desc="Reading the clip")
    frames, fps, note = read_upload(video_path, limits)
    progress(0.1, desc=f"Anonymizing {len(frames)} frames")
    refiner = os.environ.get(REFINER_ENV) if refine else None
    start = time.perf_counter()
    try:  # the datasets map function, on a batch of one, always on the same thread (see ANONYMIZER_THREAD)
        out = ANONYMIZER_THREAD.submit(
            lambda: get_anonymizer(body_model, int(seed or 0), inpainter, refiner)({"video": [frames]})
        ).result()
    except ValueError as err:
        raise gr.Error(f"Bad anonymizer option: {err}")
    except ImportError as err:
        raise gr.Error(f"The anonymizer cannot run here: {err}")
    seconds = time.perf_counter() - start
    row = {key: values[0] for key, values in out.items()}

    progress(0.9, desc="Encoding the results")
    folder = Path(tempfile.mkdtemp(prefix="hf_maskdp_space_"))
    original = write_display_mp4(frames, folder / "original.mp4", fps)
    anonymized = None
    if row["video"] is None:  # withheld: nothing is public, show the whole input as sensitive
        sensitive, avatar, shown = np.ones(frames.shape[:3], bool), np.zeros(frames.shape[:3], bool), frames
    else:
        shown, sensitive = read_anonymized_clip(row)  # what a dataset stores, read as a model reads it
        avatar = decode_mask(row["avatar_mask"])
        anonymized = write_display_mp4(shown, folder / "anonymized.mp4", fps)
    overlay = write_display_mp4(mask_overlay(shown, sensitive), folder / "sensitive_overlay.mp4", fps)
    size = f"{frames.shape[2]}x{frames.shape[1]}{note}"
    return original, anonymized, overlay, summarize(row, len(frames), size, sensitive, avatar, seconds)


# ----------------------------------------------------------------------------- privacy budget


ACCOUNTANT_NAMES = {
    "rdp": "Rényi DP of the subsampled Gaussian (Mironov et al. 2019), converted as in Balle et al. 2020",
    "prv": "PRV accountant (Gopi et al. 2021), upper end of its error bar",
    "pld": "privacy loss distributions (Google dp-accounting)",
}


def _sample_rate(dataset_size, batch_size, epochs, delta) -> float:
    """Check the run's shape and return its Poisson sampling rate q = batch size / dataset size."""
    if None in (dataset_size, batch_size, epochs, delta):
        raise gr.Error("Fill in dataset size, batch size, epochs and δ.")
    if dataset_size < 1 or batch_size < 1:
        raise gr.Error("Dataset size and batch size must be at least 1.")
    if batch_size > dataset_size:
        raise gr.Error(f"Batch size {batch_size:g} is larger than the dataset ({dataset_size:g}); lower it.")
    return float(batch_size) / float(dataset_size)


def privacy_budget(dataset_size, batch_size, epochs, noise_multiplier, delta, accountant, progress=gr.Progress()):
    """ε of a run, and ε against epochs up to the run's length."""
    import pandas as pd

    from hf_maskdp.privacy.accounting import compute_epsilon, steps_for_epochs

    q = _sample_rate(dataset_size, batch_size, epochs, delta)
    if noise_multiplier is None:
        raise gr.Error("Fill in the noise multiplier σ.")
    try:
        epsilon = compute_epsilon(q, noise_multiplier, delta=delta, accountant=accountant, epochs=epochs)
        grid = np.unique(np.round(np.linspace(0, epochs, 13)[1:], 4))
        curve = [
            compute_epsilon(q, noise_multiplier, delta=delta, accountant=accountant, epochs=e)
            for e in progress.tqdm(grid, desc="ε against epochs")
        ]
    except ValueError as err:
        raise gr.Error(str(err))
    text = (
        f"### ε = {epsilon:.3g} at δ = {delta:g}\n"
        f"Accountant: **{accountant}**, {ACCOUNTANT_NAMES.get(accountant, accountant)}. "
        f"Poisson sampling rate q = {q:.4g}, {steps_for_epochs(q, epochs)} steps, σ = {noise_multiplier:g}.\n\n"
        + MASKDP_SENTENCE
        + _delta_note(delta, dataset_size)
    )
    plot = pd.DataFrame({"epochs": grid.astype(float), "epsilon": np.asarray(curve, dtype=float)})
    return text, plot


def calibrate_noise(dataset_size, batch_size, epochs, target_epsilon, delta, accountant):
    """The smallest σ whose ε is at most the target; also fills the σ box."""
    from hf_maskdp.privacy.accounting import calibrate_noise_multiplier

    q = _sample_rate(dataset_size, batch_size, epochs, delta)
    if target_epsilon is None:
        raise gr.Error("Fill in the target ε.")
    try:
        sigma = calibrate_noise_multiplier(target_epsilon, q, delta=delta, accountant=accountant, epochs=epochs)
    except ValueError as err:
        raise gr.Error(str(err))
    sigma = math.ceil(sigma * 1e4) / 1e4  # shown and used rounded up: rounding down would overspend ε
    text = f"σ = **{sigma:g}** reaches ε ≤ {target_epsilon:g} at δ = {delta:g} in {epochs:g} epochs ({accountant})."
    return sigma, text + _delta_note(delta, dataset_size)


def _delta_note(delta, dataset_size) -> str:
    """A warning paragraph when δ > 1/N (the guarantee may fail for a whole record), else nothing."""
    from hf_maskdp.privacy.accounting import delta_warning

    warning = delta_warning(delta, int(dataset_size))
    return f"\n\n**Warning:** {warning}" if warning else ""


# ----------------------------------------------------------------------------- classify


def find_model(model: str | None = None) -> str | None:
    """The model to classify with: argument, then $HF_MASKDP_MODEL, then the quickstart output."""
    model = model or os.environ.get(MODEL_ENV)
    if model:
        return model
    return str(DEFAULT_MODEL_DIR.resolve()) if DEFAULT_MODEL_DIR.is_dir() else None


@functools.lru_cache(maxsize=2)
def load_classifier(model_id: str):
    from transformers import AutoImageProcessor, AutoModelForVideoClassification

    from hf_maskdp.training.collator import VideoClipCollator

    model = AutoModelForVideoClassification.from_pretrained(model_id).eval()
    try:
        processor = AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):  # tiny and quickstart models may ship no processor: follow the config
        processor = None
    image_size = None if processor is not None else model.config.image_size
    collator = VideoClipCollator(processor, num_frames=model.config.num_frames, image_size=image_size)
    return model, collator


def model_summary(model) -> str:
    record = getattr(model.config, "maskdp", None) or {}
    if record.get("epsilon") is not None:
        return (
            f"Trained with **{record.get('privacy_mode')}**: ε = {record['epsilon']:.3g}, δ = {record.get('delta'):g} "
            f"({record.get('accountant')}), on {record.get('private_records')} clips with sensitive content."
        )
    if record:
        return f"Trained with privacy_mode **{record.get('privacy_mode')}**: no privacy guarantee."
    return "This model carries no MaskDP privacy record."


def classify(video_path, model_id: str | None, limits: SpaceLimits, top_k: int = 5, progress=gr.Progress()):
    import torch

    if model_id is None:
        raise gr.Error(
            f"No model: set {MODEL_ENV} to a model folder or Hub id, or run `hf-maskdp quickstart` "
            f"to create {DEFAULT_MODEL_DIR}."
        )
    progress(0.0, desc="Reading the clip")
    frames, _, _ = read_upload(video_path, limits)
    progress(0.3, desc="Loading the model")
    try:
        model, collator = load_classifier(model_id)
    except (OSError, ValueError) as err:
        raise gr.Error(f"Cannot load the model {model_id}: {err}")
    progress(0.6, desc="Classifying")
    with torch.no_grad():
        logits = model(pixel_values=collator([{"video": frames}])["pixel_values"]).logits[0]
    probs = logits.softmax(-1)
    top = probs.topk(min(top_k, len(probs)))
    labels = model.config.id2label
    return {labels.get(int(i), str(int(i))): float(p) for p, i in zip(top.values, top.indices)}, model_summary(model)


# ----------------------------------------------------------------------------- examples


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_maskdp" / "space")


def make_examples(cache_dir: Path, limits: SpaceLimits) -> list[str]:
    """Example clips, generated once into `cache_dir` (no binary videos in the repository).

    Inputs, not outputs: an ordinary lossy mp4 is fine here and the browser can preview it.
    """
    from skimage.data import astronaut

    cache_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    astronaut_clip = cache_dir / "astronaut_pan_zoom.mp4"
    if not astronaut_clip.exists():
        write_display_mp4(image_clip(astronaut(), limits.example_frames), astronaut_clip)
    examples.append(str(astronaut_clip))
    dataset_clip = embedded_dataset_clip(cache_dir)
    if dataset_clip:
        examples.append(dataset_clip)
    return examples


def embedded_dataset_clip(cache_dir: Path) -> str | None:
    """One clip of the embedded action dataset (hf_maskdp.data), rendered once into `cache_dir`."""
    from hf_maskdp.data import generate_clip

    path = cache_dir / "embedded_action.mp4"
    if path.exists():
        return str(path)
    try:
        write_display_mp4(load_video_frames(generate_clip(seed=0)["video"]), path)
    except (TypeError, ValueError, KeyError) as err:  # an example must not keep the Space from starting
        warnings.warn(f"no embedded-dataset example: hf_maskdp.data.generate_clip(seed=0) failed: {err}")
        return None
    return str(path)


# ----------------------------------------------------------------------------- page


def build_demo(
    limits: SpaceLimits | None = None, cache_dir: str | Path | None = None, model: str | None = None
) -> gr.Blocks:
    limits = limits or SpaceLimits()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    examples = make_examples(cache_dir, limits)
    bodies, inpainters, can_refine = anonymizer_options()
    model_id = find_model(model)

    with gr.Blocks(title="hf_maskdp: avatar anonymization + MaskDP") as demo:
        gr.Markdown(
            "# Avatar anonymization and Masked Differential Privacy\n"
            "Every person in a clip is replaced by a rendered avatar; the **sensitive mask** marks every pixel "
            "that may still carry real-world information. MaskDP training adds noise only for those pixels."
        )
        with gr.Tab("Anonymize"):
            with gr.Row():
                video_in = gr.Video(label="Clip to anonymize", sources=["upload"], height=300, elem_id="video-in")
                image_in = gr.Image(
                    label="...or a photo (made into a short clip)", type="numpy", sources=["upload"], height=300
                )
            gr.Examples(examples=[[e] for e in examples], inputs=[video_in], label="Examples")
            with gr.Row():
                body = gr.Dropdown(bodies, value=bodies[0], label="Body model")
                seed = gr.Number(0, precision=0, label="Seed (avatar identity)")
                inpainter = gr.Dropdown(inpainters, value=inpainters[0], label="Inpainter")
                refine = gr.Checkbox(False, label="Diffusion refinement", visible=can_refine)
            run = gr.Button("Anonymize", variant="primary")
            with gr.Row():
                original_out = gr.Video(label="Original", interactive=False)
                anonymized_out = gr.Video(label="Anonymized", interactive=False, elem_id="video-anonymized")
                overlay_out = gr.Video(label="Sensitive mask (red: may carry real pixels)", interactive=False)
            status_out = gr.Markdown(elem_id="anonymize-status")

            image_in.upload(
                lambda image: write_display_mp4(
                    image_clip(image, limits.example_frames), Path(tempfile.mkdtemp()) / "photo.mp4"
                ),
                inputs=image_in,
                outputs=video_in,
                api_name="image_to_clip",
            )
            run.click(
                functools.partial(anonymize, limits=limits),
                inputs=[video_in, body, seed, inpainter, refine],
                outputs=[original_out, anonymized_out, overlay_out, status_out],
                api_name="anonymize",
            )

        with gr.Tab("Privacy budget"):
            with gr.Row():
                dataset_size = gr.Number(10_000, precision=0, label="Clips with sensitive content (N; q = batch / N)")
                batch_size = gr.Number(256, precision=0, label="Expected private batch size")
                epochs = gr.Number(10, label="Epochs")
            with gr.Row():
                sigma = gr.Number(1.0, label="Noise multiplier σ")
                delta = gr.Number(1e-5, label="δ")
                accountant = gr.Dropdown(list(ACCOUNTANTS), value=DEFAULT_ACCOUNTANT, label="Accountant")
            compute = gr.Button("Compute ε", variant="primary")
            budget_text = gr.Markdown()
            budget_plot = gr.LinePlot(x="epochs", y="epsilon", x_title="epochs", y_title="ε", label="ε against epochs")
            with gr.Row():
                target = gr.Number(1.0, label="Target ε")
                calibrate = gr.Button("Find σ for the target ε")
            calibrate_text = gr.Markdown()
            budget_inputs = [dataset_size, batch_size, epochs, sigma, delta, accountant]
            compute.click(privacy_budget, budget_inputs, [budget_text, budget_plot], api_name="privacy_budget")
            calibrate.click(
                calibrate_noise,
                [dataset_size, batch_size, epochs, target, delta, accountant],
                [sigma, calibrate_text],
                api_name="calibrate_noise",
            ).then(privacy_budget, budget_inputs, [budget_text, budget_plot], api_name=False)

        with gr.Tab("Classify"):
            gr.Markdown(
                f"Model: `{model_id}`"
                if model_id
                else f"No model yet: set `{MODEL_ENV}` or run `hf-maskdp quickstart` (it saves `{DEFAULT_MODEL_DIR}`)."
            )
            clip_in = gr.Video(label="Clip to classify", sources=["upload"], height=300)
            gr.Examples(examples=[[e] for e in examples], inputs=[clip_in], label="Examples")
            classify_button = gr.Button("Classify", variant="primary")
            top_classes = gr.Label(num_top_classes=5, label="Top classes")
            model_text = gr.Markdown()
            classify_button.click(
                functools.partial(classify, model_id=model_id, limits=limits),
                inputs=clip_in,
                outputs=[top_classes, model_text],
                api_name="classify",
            )
    demo.queue(default_concurrency_limit=1)  # one anonymization at a time on a small CPU
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    limits: SpaceLimits | None = None,
    cache_dir: str | Path | None = None,
    model: str | None = None,
    **launch_kwargs,
) -> gr.Blocks:
    """Build and serve the demo; returns it (pass `prevent_thread_lock=True` to keep going)."""
    limits = limits or SpaceLimits()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    demo = build_demo(limits, cache_dir, model)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{int(limits.max_upload_mb)}mb",
        allowed_paths=[str(cache_dir.resolve())],
        **launch_kwargs,
    )
    return demo


def install_mediapipe_on_spaces() -> None:
    """mediapipe 0.10.21 declares numpy<2, so requirements.txt cannot hold it; install it without deps."""
    import importlib.util
    import subprocess
    import sys

    if os.environ.get("SPACE_ID") and importlib.util.find_spec("mediapipe") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "mediapipe==0.10.21"], check=True)


if __name__ == "__main__":
    install_mediapipe_on_spaces()
    # Spaces set GRADIO_SERVER_NAME=0.0.0.0; anywhere else, serve this machine only.
    launch(host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
