"""The Gradio Space, served on 127.0.0.1 and called through gradio_client like any remote user."""

from __future__ import annotations

import os
import socket

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file

from hf_maskdp.commands.space import load_space_app
from hf_maskdp.privacy.accounting import compute_epsilon
from hf_maskdp.video import encode_video, load_video_frames

app = load_space_app()
LIMITS = app.SpaceLimits(max_upload_mb=1, max_frames=40)
LABELS = {0: "wave", 1: "jump", 2: "squat"}


def video_path(value) -> str:
    """gradio_client gives a video output as a path (older versions: {"video": path, ...})."""
    return value["video"] if isinstance(value, dict) else value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_videomae(folder) -> str:
    """A MaskDP-style model folder: tiny VideoMAE from a config, with a privacy record."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    config.maskdp = {
        "privacy_mode": "maskdp",
        "epsilon": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "training_rows": 60,
        "private_records": 60,
    }
    VideoMAEForVideoClassification(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    old = os.environ.get(app.MODEL_ENV)
    os.environ[app.MODEL_ENV] = tiny_videomae(root / "model")
    demo = app.launch(port=free_port(), limits=LIMITS, cache_dir=root / "cache", prevent_thread_lock=True, quiet=True)
    try:
        yield demo, Client(demo.local_url, verbose=False), root
    finally:
        demo.close()
        if old is None:
            os.environ.pop(app.MODEL_ENV)
        else:
            os.environ[app.MODEL_ENV] = old


def test_default_model_is_where_the_quickstart_saves_it():
    from pathlib import Path

    from hf_maskdp.quickstart import MODEL_FOLDER, QuickstartConfig

    assert app.DEFAULT_MODEL_DIR == Path(QuickstartConfig().output_dir) / MODEL_FOLDER


def test_binds_to_localhost_by_default(space):
    demo, _, _ = space
    assert demo.server_name == "127.0.0.1"


def test_privacy_budget_matches_the_accountant(space):
    _, client, _ = space
    text, plot = client.predict(10_000, 250, 8, 1.1, 1e-5, "rdp", api_name="/privacy_budget")
    expected = compute_epsilon(0.025, 1.1, delta=1e-5, accountant="rdp", epochs=8)
    assert f"ε = {expected:.3g}" in text and "rdp" in text and "MaskDP" in text
    rows = plot["data"]
    epochs, eps = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    assert epochs[-1] == 8 and eps[-1] == pytest.approx(expected)
    assert eps[0] == pytest.approx(compute_epsilon(0.025, 1.1, delta=1e-5, epochs=epochs[0]))
    assert np.all(np.diff(eps) > 0)  # more epochs spend more budget


def test_calibrated_noise_reaches_the_target_and_no_less_noise_does(space):
    _, client, _ = space
    sigma, text = client.predict(10_000, 250, 8, 2.0, 1e-5, "rdp", api_name="/calibrate_noise")
    assert compute_epsilon(0.025, sigma, delta=1e-5, epochs=8) <= 2.0  # the σ shown, as rounded
    assert compute_epsilon(0.025, sigma * 0.99, delta=1e-5, epochs=8) > 2.0
    assert "ε ≤ 2" in text


def test_delta_above_one_over_n_is_warned_about(space):
    _, client, _ = space
    text, _ = client.predict(12, 4, 1, 1.0, 0.5, "rdp", api_name="/privacy_budget")
    assert "**Warning:** delta=0.5 is larger than 1/N = 1/12" in text and "fails outright" in text
    _, text = client.predict(12, 4, 1, 10.0, 0.5, "rdp", api_name="/calibrate_noise")
    assert "larger than 1/N = 1/12" in text
    text, _ = client.predict(12, 4, 1, 1.0, 1e-5, "rdp", api_name="/privacy_budget")
    assert "Warning" not in text


def test_privacy_budget_bad_input_is_a_clear_message(space):
    _, client, _ = space
    with pytest.raises(Exception, match="larger than the dataset"):
        client.predict(100, 500, 1, 1.0, 1e-5, "rdp", api_name="/privacy_budget")
    with pytest.raises(Exception, match="delta"):
        client.predict(100, 10, 1, 1.0, 2.0, "rdp", api_name="/privacy_budget")


def test_anonymize_the_astronaut_example(space):
    _, client, root = space
    example = root / "cache" / "astronaut_pan_zoom.mp4"
    original, anonymized, overlay, status = client.predict(
        handle_file(str(example)), "mannequin", 0, "temporal", False, api_name="/anonymize"
    )
    assert "Status: `ok`" in status and "people found: 1" in status and "24/24" in status
    source = load_video_frames(example)
    for path in (video_path(original), video_path(anonymized), video_path(overlay)):
        with av.open(path) as container:  # what browsers play
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
    shown_original = load_video_frames(video_path(original)).astype(int)
    shown = load_video_frames(video_path(anonymized)).astype(int)
    assert shown.shape == source.shape
    assert np.abs(shown_original - source).mean() < 3  # display copy of the input (lossy, close)

    # The page shows what the map function computes: run it here on the same clip and compare.
    from hf_maskdp import read_anonymized_clip
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer

    out = AvatarAnonymizer(AnonymizerConfig(body_model="mannequin", seed=0))({"video": [source]})
    expected, sensitive = read_anonymized_clip({key: values[0] for key, values in out.items()})
    expected = expected.astype(int)
    assert f"public (avatar) pixels: {100 * (~sensitive).mean():.1f} %" in status
    assert np.abs(shown - expected).mean() < 3
    # The overlay tints exactly the sensitive pixels red.
    tinted = load_video_frames(video_path(overlay)).astype(int)
    redness = (
        tinted[..., 0]
        - (tinted[..., 1] + tinted[..., 2]) / 2
        - (expected[..., 0] - (expected[..., 1] + expected[..., 2]) / 2)
    )
    assert redness[sensitive].mean() > 40 and abs(redness[~sensitive].mean()) < 10


def test_anonymize_works_from_any_request_thread(space):
    # gradio serves each request on some worker thread; the renderer's GL context is thread-bound.
    import threading

    _, _, root = space
    statuses = []

    def request():
        result = app.anonymize(
            str(root / "cache" / "astronaut_pan_zoom.mp4"),
            "mannequin",
            1,
            "opencv",
            False,
            limits=LIMITS,
            progress=lambda *args, **kwargs: None,
        )
        statuses.append(result[3])

    for _ in range(2):
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()
    assert len(statuses) == 2 and all("Status: `ok`" in status for status in statuses)


def test_image_upload_becomes_a_clip(space, tmp_path):
    from PIL import Image
    from skimage.data import astronaut

    _, client, _ = space
    Image.fromarray(astronaut()).save(tmp_path / "astronaut.png")
    clip = client.predict(handle_file(str(tmp_path / "astronaut.png")), api_name="/image_to_clip")
    frames = load_video_frames(video_path(clip))
    assert frames.shape == (LIMITS.example_frames, 256, 256, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # the camera moves


def test_a_clip_without_a_person_is_withheld_not_shown_as_anonymized(space, tmp_path):
    from PIL import Image
    from skimage.data import coffee

    _, client, _ = space
    Image.fromarray(coffee()).save(tmp_path / "coffee.png")  # a real photo with nobody in it
    clip = client.predict(handle_file(str(tmp_path / "coffee.png")), api_name="/image_to_clip")
    original, anonymized, overlay, status = client.predict(
        handle_file(video_path(clip)), "mannequin", 0, "temporal", False, api_name="/anonymize"
    )
    assert "Status: `no_person`" in status and "withheld" in status and "public (avatar) pixels: 0.0 %" in status
    assert anonymized is None and original is not None and overlay is not None


def test_bad_uploads_get_clear_messages(space, tmp_path):
    demo, client, _ = space
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(Exception, match="not a video"):
        client.predict(handle_file(str(not_video)), "mannequin", 0, "temporal", False, api_name="/anonymize")

    too_long = tmp_path / "long.mp4"
    encode_video(np.zeros((LIMITS.max_frames + 1, 32, 32, 3), np.uint8), path=too_long)
    with pytest.raises(
        Exception, match=f"{LIMITS.max_frames + 1} frames; this Space takes at most {LIMITS.max_frames}"
    ):
        client.predict(handle_file(str(too_long)), "mannequin", 0, "temporal", False, api_name="/anonymize")

    too_large = tmp_path / "large.mp4"
    too_large.write_bytes(os.urandom(int(1.5 * 2**20)))
    with pytest.raises(Exception, match="exceeds the maximum file size"):  # the client checks first...
        client.predict(handle_file(str(too_large)), "mannequin", 0, "temporal", False, api_name="/anonymize")
    import httpx  # ...and the server refuses it anyway (a browser or script may skip that check)

    with too_large.open("rb") as f:
        response = httpx.post(f"{demo.local_url}gradio_api/upload", files={"files": ("large.mp4", f, "video/mp4")})
    assert response.status_code == 413 and "maximum allowed size" in response.text

    with pytest.raises(Exception, match="No clip"):
        client.predict(None, "mannequin", 0, "temporal", False, api_name="/anonymize")


def test_classify_runs_the_model_like_the_collator_does(space):
    import torch
    from transformers import AutoModelForVideoClassification

    from hf_maskdp.training.collator import VideoClipCollator

    _, client, root = space
    example = root / "cache" / "astronaut_pan_zoom.mp4"
    label, summary = client.predict(handle_file(str(example)), api_name="/classify")
    model = AutoModelForVideoClassification.from_pretrained(root / "model").eval()
    batch = VideoClipCollator(num_frames=4, image_size=32)([{"video": load_video_frames(example)}])
    with torch.no_grad():
        probs = model(pixel_values=batch["pixel_values"]).logits[0].softmax(-1)
    shown = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert shown == pytest.approx({LABELS[i]: float(p) for i, p in enumerate(probs)}, abs=1e-5)
    assert label["label"] == LABELS[int(probs.argmax())]
    assert "ε = 1" in summary and "maskdp" in summary and "on 60 clips with sensitive content" in summary


def test_accountant_choices_are_the_constants(space):
    from hf_maskdp.constants import ACCOUNTANTS, DEFAULT_ACCOUNTANT

    demo, _, _ = space
    (dropdown,) = [b for b in demo.blocks.values() if getattr(b, "label", None) == "Accountant"]
    assert tuple(value for _, value in dropdown.choices) == ACCOUNTANTS and dropdown.value == DEFAULT_ACCOUNTANT


def test_classify_without_a_model_says_how_to_get_one():
    import gradio as gr

    with pytest.raises(gr.Error, match="HF_MASKDP_MODEL"):
        app.classify("clip.mp4", model_id=None, limits=LIMITS)


def test_cli_space_help_and_bad_port(capsys):
    from hf_maskdp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["space", "--help"])
    assert exit_info.value.code == 0 and "127.0.0.1" in capsys.readouterr().out
    assert main(["space", "--port", "70000"]) == 2
    assert "--port 70000 is out of range" in capsys.readouterr().err
