"""Benchmark the avatar anonymizer: frames per second per stage and end to end.

    .venv/bin/python scripts/bench_anonymize.py [--frames 16] [--repeats 2] [--picture outputs/anonymize_astronaut.png]

The clip is the astronaut photo (scikit-image, a real person) as a pan/zoom, encoded as an
ordinary H.264 mp4. "end to end" is the map function on one row: decode the mp4, every stage,
then the storage encode (`hf_maskdp.encode_anonymized_clip`: composite, avatar layer, masks). It also saves the picture
input | anonymized | sensitive mask (white = sensitive) of the middle frame.

The second table is the cost of several people, at one frame size (448x224): the astronaut
next to a photo with nobody in it, searched for one person only (`max_people=1`) and with the
default search for more, then the astronaut twice (two people).

The third table is the added cost of each paper-fidelity option on the 224x224 clip, side by
side with the default (mannequin): the SMPL-H body (a synthetic SMPL-H file built as the tests
build it: the licensed model cannot ship, so this times the smplx code path on a stick figure
with SMPL-H's vertex count), Anny if installed, and diffusion refinement with the tests' tiny
random-weight pipeline (this times the plumbing only: a real Stable Diffusion model needs a GPU
and was not measured). It saves the middle frame anonymized with each body model to
--bodies-picture.

    .venv/bin/python scripts/bench_anonymize.py --sd-architecture [--device cuda]

times the refiner alone with a pipeline of Stable Diffusion 1.5's architecture and sizes (UNet,
VAE, CLIP ViT-L text encoder, a depth ControlNet) and random weights: the same compute as a
real checkpoint, which cannot be downloaded here. Run it on a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction

import cv2
import numpy as np

from hf_maskdp.anonymize.pipeline import AvatarAnonymizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))  # test fixtures: synthetic SMPL-H, tiny SD
from hf_maskdp.storage import encode_anonymized_clip
from hf_maskdp.video import encode_mask

GOAL_FPS = 10.0
STAGES = ["decode", "pose", "tracking", "fit", "render", "inpaint", "composite", "encode"]


def astronaut_clip(num_frames: int, width: int, height: int) -> np.ndarray:
    import skimage.data

    image = skimage.data.astronaut()
    frames = []
    for t in range(num_frames):
        crop_h = int(480 * (0.9 - 0.01 * t))
        crop_w = min(512, int(crop_h * width / height))
        x0, y0 = min(512 - crop_w, 2 * t), 10
        frames.append(
            cv2.resize(image[y0 : y0 + crop_h, x0 : x0 + crop_w], (width, height), interpolation=cv2.INTER_AREA)
        )
    return np.stack(frames)


def side_by_side_clip(right: np.ndarray, num_frames: int, height: int) -> np.ndarray:
    """The astronaut next to `right` (a 512 x 512 photo), 2 x `height` px wide, the camera panning."""
    import skimage.data

    pair = np.concatenate([skimage.data.astronaut(), right], axis=1)
    frames = []
    for t in range(num_frames):
        crop = int(512 * (0.9 - 0.01 * t))
        frames.append(
            cv2.resize(
                pair[10 : 10 + crop, 2 * t : 2 * t + 2 * crop], (2 * height, height), interpolation=cv2.INTER_AREA
            )
        )
    return np.stack(frames)


def mp4_bytes(frames: np.ndarray) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def bench(anonymizer: AvatarAnonymizer, video: bytes, num_frames: int, repeats: int):
    stages: Counter = Counter()
    total = 0.0
    result = None
    cpu = time.process_time()  # all threads of this process: less sensitive to other users of the CPUs
    for _ in range(repeats):
        start = time.perf_counter()
        result = anonymizer.anonymize_clip(video)
        clock = time.perf_counter()
        encode_anonymized_clip(result.frames, result.sensitive_mask, fps=result.fps)
        encode_mask(result.avatar_mask)
        stages["encode"] += time.perf_counter() - clock
        total += time.perf_counter() - start
        stages.update(result.timings)
    frames = num_frames * repeats
    cpu_ms = 1000 * (time.process_time() - cpu) / frames
    return {stage: frames / max(stages[stage], 1e-9) for stage in {*STAGES, *stages}}, frames / total, cpu_ms, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--picture", default="outputs/anonymize_astronaut.png")
    parser.add_argument("--bodies-picture", default="outputs/anonymize_body_models.png")
    parser.add_argument(
        "--sd-architecture", action="store_true", help="only time the refiner at Stable Diffusion 1.5's size"
    )
    parser.add_argument("--device", default=None, help="for --sd-architecture (default: cuda if available)")
    args = parser.parse_args()
    if args.sd_architecture:
        return bench_sd_architecture(args.device)

    anonymizer = AvatarAnonymizer(seed=0)
    anonymizer.anonymize_clip(astronaut_clip(2, 64, 64))  # load the models outside the timings
    print(
        f"threads: {os.cpu_count()} CPUs; {args.frames} frames x {args.repeats} runs; frames per second (higher is better)"
    )
    print(
        f"{'size':>9} | "
        + " | ".join(f"{s:>9}" for s in STAGES)
        + f" | {'end2end':>8} | vs goal {GOAL_FPS:g} | CPU ms/frame"
    )
    for width, height in ((224, 224), (320, 240)):
        clip = astronaut_clip(args.frames, width, height)
        per_stage, end_to_end, cpu_ms, result = bench(anonymizer, mp4_bytes(clip), args.frames, args.repeats)
        assert result.status == "ok", result.status
        print(
            f"{width:>4}x{height:<4} | "
            + " | ".join(f"{per_stage[s]:>9.1f}" for s in STAGES)
            + f" | {end_to_end:>8.1f} | {end_to_end / GOAL_FPS:>9.2f}x | {cpu_ms:.0f}"
        )
        if (width, height) == (224, 224):
            t = args.frames // 2
            mask = np.repeat(result.sensitive_mask[t, ..., None], 3, axis=-1).astype(np.uint8) * 255
            picture = np.concatenate([clip[t], result.frames[t], mask], axis=1)
            os.makedirs(os.path.dirname(args.picture) or ".", exist_ok=True)
            cv2.imwrite(args.picture, picture[..., ::-1])
            public = (~result.sensitive_mask).mean()
    print(
        f"224x224: {public:.1%} of pixels public (avatar); picture (input | anonymized | mask) saved to {args.picture}"
    )

    import skimage.data

    nobody = cv2.resize(skimage.data.coffee(), (512, 512), interpolation=cv2.INTER_AREA)
    cases = [
        ("1 person, max_people=1", AvatarAnonymizer(seed=0, max_people=1), nobody, 1),
        ("1 person (default search)", anonymizer, nobody, 1),
        ("2 people", anonymizer, skimage.data.astronaut(), 2),
    ]
    print(f"\n448x224, frames per second | {'pose':>7} | {'fit':>7} | {'render':>7} | {'end2end':>7} | vs first row")
    baseline = None
    for name, case_anonymizer, right, people in cases:
        case_anonymizer.anonymize_clip(astronaut_clip(2, 64, 64))  # load its models outside the timings
        clip = side_by_side_clip(right, args.frames, 224)
        per_stage, end_to_end, _, result = bench(case_anonymizer, mp4_bytes(clip), args.frames, args.repeats)
        assert result.status == "ok" and result.num_people == people, (name, result.status, result.num_people)
        baseline = baseline or end_to_end
        print(
            f"{name:>26} | {per_stage['pose']:>7.1f} | {per_stage['fit']:>7.1f} | {per_stage['render']:>7.1f} | "
            f"{end_to_end:>7.1f} | {end_to_end / baseline:.2f}x"
        )

    bench_options(args)


def option_cases(workdir: str) -> list[tuple[str, str, dict]]:
    """(name, picture caption or "", AnonymizerConfig overrides) for each option available here."""
    from test_refine import TINY, save_tiny_pipeline
    from test_smplh import write_synthetic_smplh

    smplh = str(write_synthetic_smplh(os.path.join(workdir, "SMPLH_NEUTRAL.npz")))
    save_tiny_pipeline(os.path.join(workdir, "tiny_sd"))
    refiner = dict(refiner=os.path.join(workdir, "tiny_sd"), refiner_options=TINY)
    cases = [
        ("mannequin (default)", "mannequin", {}),
        ("smplh (synthetic file)", "smplh: SYNTHETIC file", dict(body_model="smplh", smplh_model_path=smplh)),
    ]
    if importlib.util.find_spec("anny") is not None:
        cases.append(("anny", "anny", dict(body_model="anny")))
    cases += [
        ("+ tiny refiner, context=render", "", refiner),
        ("+ tiny refiner, context=real", "", dict(refiner, refiner_options=dict(TINY, context="real"))),
    ]
    return cases


def caption(image: np.ndarray, text: str) -> np.ndarray:
    strip = np.full((28, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image])


def bench_options(args) -> None:
    import warnings

    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(1)  # smplx and the tiny pipeline run small ops: threads only oversubscribe a busy CPU
    diffusers_logging.set_verbosity_error()  # the tiny tokenizer is per character: every prompt is "truncated"
    transformers_logging.set_verbosity_error()
    clip = astronaut_clip(args.frames, 224, 224)
    video = mp4_bytes(clip)
    t = args.frames // 2
    panels = [caption(clip[t], "input (real photo)")]
    print(
        f"\n224x224 (torch threads: 1) | {'fit':>7} | {'render':>7} | {'refine':>7} | {'end2end':>7} | vs mannequin | public | status"
    )
    baseline = None
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # context="real" warns that it leaves no public pixels: that is measured here
        for name, label, overrides in option_cases(workdir):
            anonymizer = AvatarAnonymizer(seed=0, **overrides)
            anonymizer.anonymize_clip(astronaut_clip(2, 224, 224))  # load and run its models once outside the timings
            per_stage, end_to_end, _, result = bench(anonymizer, video, args.frames, args.repeats)
            refine = per_stage.get("refine")
            baseline = baseline or end_to_end
            print(
                f"{name:>31} | {per_stage['fit']:>7.1f} | {per_stage['render']:>7.1f} | "
                f"{'-' if refine is None else f'{refine:.1f}':>7} | {end_to_end:>7.1f} | {end_to_end / baseline:>11.2f}x | "
                f"{(~result.sensitive_mask).mean():>6.1%} | {result.status}"
            )
            if label:
                panels.append(caption(result.frames[t], f"{label} ({result.status.split(':')[0]})"))
    cv2.imwrite(args.bodies_picture, np.concatenate(panels, axis=1)[..., ::-1])
    print(f"picture of frame {t} with each body model saved to {args.bodies_picture}")


def save_sd15_architecture(path: str, controlnet_path: str) -> None:
    """A random-weight pipeline with Stable Diffusion 1.5's configs (and a ControlNet's) for timing."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from test_refine import tiny_tokenizer  # the weights are random anyway: any tokenizer of <= 77 tokens will do
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the other defaults are SD 1.5's
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            projection_dim=768,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(path)
    ControlNetModel(cross_attention_dim=768).to(torch.float16).save_pretrained(controlnet_path)


def bench_sd_architecture(device: str | None) -> None:
    """Milliseconds per frame (one or two people) of `Refiner.refine` with SD 1.5-sized random weights."""
    import torch

    from hf_maskdp.anonymize.body import Appearance
    from hf_maskdp.anonymize.refine import Refiner
    from hf_maskdp.anonymize.render import RenderOutput

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    height, width = 224, 224
    yy, xx = np.mgrid[:height, :width]
    people = [((yy - 120) / 95) ** 2 + ((xx - 70) / 40) ** 2 < 1, ((yy - 120) / 95) ** 2 + ((xx - 160) / 40) ** 2 < 1]
    index = np.full((height, width), -1, np.int16)
    for i, person in enumerate(people):
        index[person] = i
    render = RenderOutput(
        rgb=np.where(index[..., None] >= 0, 150, 0).repeat(3, axis=-1).astype(np.uint8),
        depth=np.where(index >= 0, 3.0, np.inf).astype(np.float32),
        coverage=(index >= 0).astype(np.float32),
        person_index=index,
    )
    looks = [Appearance.sample(np.random.default_rng(i)) for i in range(2)]
    dtype = "float16" if device == "cuda" else "float32"
    print(f"Refiner.refine, SD 1.5 architecture with random weights, {name}, {dtype}: ms per frame (224x224 render)")
    print(f"{'model':>22} | {'steps x strength':>16} | {'1 person':>9} | {'2 people':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        save_sd15_architecture(os.path.join(workdir, "sd"), os.path.join(workdir, "controlnet"))
        print(f"(built and saved in {time.perf_counter() - start:.0f} s)")
        for label, controlnet in (("img2img", None), ("+ ControlNet (depth)", os.path.join(workdir, "controlnet"))):
            for steps, strength in ((20, 0.35), (30, 0.5)):
                refiner = Refiner.from_pretrained(
                    os.path.join(workdir, "sd"),
                    controlnet_id=controlnet,
                    device=device,
                    num_inference_steps=steps,
                    strength=strength,
                )
                times = []
                for count in (1, 2):
                    people_index = np.where(index < count, index, -1).astype(np.int16)
                    only = RenderOutput(render.rgb, render.depth, render.coverage, people_index)
                    refiner.refine(only, looks[:count], list(range(count)))  # warm-up
                    start = time.perf_counter()
                    for _ in range(3):
                        refiner.refine(only, looks[:count], list(range(count)))
                    times.append(1000 * (time.perf_counter() - start) / 3)
                print(f"{label:>22} | {steps:>8} x {strength:<5} | {times[0]:>9.0f} | {times[1]:>9.0f}")


if __name__ == "__main__":
    main()
