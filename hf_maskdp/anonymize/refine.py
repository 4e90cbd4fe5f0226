"""Optional diffusion refinement of rendered avatars (`refiner="<diffusers model id or path>"`).

Each person's avatar is cropped from the render, redrawn by a Stable Diffusion img2img
pipeline (optionally a ControlNet on the render's depth or edges) with a prompt that
describes their sampled look, and pasted back onto that person's pixels only.

Privacy rule (docs/privacy.md, "What is *not* protected"): with `context="render"` (default) the pipeline reads only public
inputs: the render over a constant grey, its depth/edges, a prompt from the seeded
appearance and a seed. Refined avatar pixels therefore stay `sensitive_mask == False`.
`context="real"` paints the avatar over the real frame first, so the model sees real
pixels and its output carries them: `reads_real_pixels` is then True and
`sensitive_pixels(render)` marks every refined pixel, which the caller must OR into the mask.

Temporal stability: the crop is resized to a fixed `resolution` and the noise comes from
the person's identity seed, so every frame of a person starts from the same noise; a low
`strength` keeps the render's structure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from hf_maskdp.anonymize.body import CLOTHING_COLORS, HAIR_COLORS, SKIN_TONES, Appearance
from hf_maskdp.anonymize.render import RenderOutput

CONTEXTS = ("render", "real")
CONTROLS = ("depth", "edges")
PUBLIC_BACKGROUND = 127  # the constant the render is shown over in "render" context
CLOTHING_NAMES = (
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "teal",
    "white",
    "black",
    "grey",
    "navy",
    "brown",
    "pink",
)  # the rows of body.CLOTHING_COLORS
HAIR_NAMES = ("black", "dark brown", "light brown", "blond", "grey")
SKIN_NAMES = ("very light", "light", "light", "medium", "medium", "tan", "dark", "very dark")


@dataclass
class RefinerConfig:
    """How avatars are refined. Suitable public models: any Stable Diffusion 1.5 checkpoint
    (e.g. `stable-diffusion-v1-5/stable-diffusion-v1-5`) with `lllyasviel/control_v11f1p_sd15_depth`
    (control="depth") or `lllyasviel/control_v11p_sd15_canny` (control="edges")."""

    model_id: str
    controlnet_id: str | None = None  # a ControlNet conditioned on `control`; None = plain img2img
    control: str = "depth"  # "depth" | "edges": what the ControlNet sees (both from the render)
    context: str = "render"  # "render": public inputs only; "real": over the real frame (output sensitive)
    strength: float = 0.35  # low: keep the avatar's pose and outline
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    resolution: int = 512  # side of the square crop the model sees (SD 1.5: 512)
    margin: float = 0.15  # crop margin around each person, as a fraction of their box
    negative_prompt: str = "blurry, deformed, extra limbs, text"
    device: str | None = None  # default: cuda if available, else cpu
    dtype: str | None = None  # torch dtype name; default: float16 on cuda, float32 on cpu

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"context={self.context!r}: choose one of {CONTEXTS}")
        if self.control not in CONTROLS:
            raise ValueError(f"control={self.control!r}: choose one of {CONTROLS}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength={self.strength} must be in (0, 1]; 0.2-0.4 keeps avatars stable over time")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution={self.resolution} must be a multiple of 8 (the VAE downsamples by 8)")


def describe(appearance: Appearance) -> str:
    """A text prompt from a sampled (public) appearance."""

    def nearest(color, palette, names):
        return names[int(np.argmin(np.linalg.norm(palette - np.asarray(color), axis=1)))]

    shirt = nearest(appearance.shirt, CLOTHING_COLORS, CLOTHING_NAMES)
    trousers = nearest(appearance.trousers, CLOTHING_COLORS, CLOTHING_NAMES)
    sleeves = "long-sleeved" if appearance.long_sleeves else "short-sleeved"
    return (
        f"a photo of a person with {nearest(appearance.skin, SKIN_TONES, SKIN_NAMES)} skin and "
        f"{nearest(appearance.hair, HAIR_COLORS, HAIR_NAMES)} hair, wearing a {shirt} {sleeves} shirt "
        f"and {trousers} trousers, natural lighting, realistic"
    )


class Refiner:
    """Redraws avatar pixels with a diffusers pipeline loaded by `from_pretrained(model_id)`.

    The pipeline is loaded lazily, once per process, and never pickled (safe to ship to
    `datasets.map(num_proc=...)` workers).
    """

    def __init__(self, config: RefinerConfig):
        self.config = config
        self._pipe = None
        self._pid = None

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, **config) -> Refiner:
        refiner = cls(RefinerConfig(model_id=str(model_id), **config))
        refiner.pipeline()  # load now: a wrong id or path fails here, not mid-dataset
        return refiner

    def __getstate__(self):
        return {"config": self.config, "_pipe": None, "_pid": None}

    @property
    def reads_real_pixels(self) -> bool:
        """True when refined pixels are computed from real pixels (and must be marked sensitive)."""
        return self.config.context == "real"

    def sensitive_pixels(self, render: RenderOutput) -> np.ndarray:
        """bool (H, W): pixels whose refined value depends on real pixels; OR them into `sensitive_mask`."""
        touched = render.coverage > 0
        return touched if self.reads_real_pixels else np.zeros_like(touched)

    def pipeline(self):
        if self._pipe is None or self._pid != os.getpid():
            import torch
            from diffusers import AutoPipelineForImage2Image, ControlNetModel

            cfg = self.config
            device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = getattr(torch, cfg.dtype or ("float16" if device == "cuda" else "float32"))
            extra = {}
            if cfg.controlnet_id:
                extra["controlnet"] = ControlNetModel.from_pretrained(cfg.controlnet_id, dtype=dtype)
            pipe = AutoPipelineForImage2Image.from_pretrained(cfg.model_id, dtype=dtype, **extra)
            pipe.set_progress_bar_config(disable=True)
            self._pipe, self._pid = pipe.to(device), os.getpid()
        return self._pipe

    def refine(
        self,
        render: RenderOutput,
        appearances: Sequence[Appearance],
        seeds: Sequence[int],
        frame: np.ndarray | None = None,
    ) -> RenderOutput:
        """A copy of `render` whose avatar pixels are redrawn, person by person.

        `appearances[i]` and `seeds[i]` belong to the mesh `i` of `render.person_index`.
        `frame` (the real or inpainted frame) is read only when `reads_real_pixels`.
        """
        if self.reads_real_pixels:
            if frame is None:
                raise ValueError("context='real' refines over the real frame: pass frame=")
            scene = render.over(frame)
        else:
            scene = render.over(np.full(render.rgb.shape, PUBLIC_BACKGROUND, np.uint8))
        rgb = render.rgb.copy()
        for person, (appearance, seed) in enumerate(zip(appearances, seeds)):
            pixels = (render.person_index == person) & (render.coverage > 0)
            if not pixels.any():
                continue
            top, left, side = self._square_box(pixels)
            refined = self._redraw(scene, render, (top, left, side), describe(appearance), seed)
            rows, cols = np.nonzero(pixels)
            rgb[rows, cols] = refined[rows - top, cols - left]
        return replace(render, rgb=rgb)

    def _square_box(self, pixels: np.ndarray) -> tuple[int, int, int]:
        rows, cols = np.nonzero(pixels)
        side = int(np.ceil(max(np.ptp(rows), np.ptp(cols)) * (1 + 2 * self.config.margin))) + 1
        centre_row, centre_col = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
        return centre_row - side // 2, centre_col - side // 2, side

    def _redraw(self, scene, render, box, prompt: str, seed: int) -> np.ndarray:
        """Run the pipeline on one square crop (zero-padded past the borders) -> uint8 (side, side, 3)."""
        import cv2
        import torch
        from PIL import Image

        cfg = self.config
        top, left, side = box
        size = (cfg.resolution, cfg.resolution)
        image = cv2.resize(_crop(scene, top, left, side), size, interpolation=cv2.INTER_AREA)
        kwargs = {}
        if cfg.controlnet_id:
            kwargs["control_image"] = Image.fromarray(self._control(render, top, left, side, size))
        pipe = self.pipeline()
        generator = torch.Generator(device="cpu").manual_seed(int(seed))  # same noise for a person in every frame
        out = pipe(
            prompt=prompt,
            negative_prompt=cfg.negative_prompt,
            image=Image.fromarray(image),
            strength=cfg.strength,
            num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
            generator=generator,
            output_type="np",
            **kwargs,
        )
        refined = np.clip(np.rint(out.images[0] * 255), 0, 255).astype(np.uint8)
        return cv2.resize(
            refined, (side, side), interpolation=cv2.INTER_AREA if side < cfg.resolution else cv2.INTER_LINEAR
        )

    def _control(self, render: RenderOutput, top, left, side, size) -> np.ndarray:
        """The ControlNet image, from the render only: inverse depth (near = bright) or Canny edges."""
        import cv2

        if self.config.control == "edges":
            crop = cv2.resize(_crop(render.rgb, top, left, side), size, interpolation=cv2.INTER_LINEAR)
            edges = cv2.Canny(crop, 50, 150)
            return np.repeat(edges[..., None], 3, axis=-1)
        depth = _crop(render.depth, top, left, side, fill=np.inf)
        valid = np.isfinite(depth)
        disparity = np.zeros(depth.shape, np.float32)
        if valid.any():
            inverse = 1.0 / depth[valid]
            low, high = inverse.min(), inverse.max()
            disparity[valid] = 0.2 + 0.8 * (inverse - low) / max(high - low, 1e-6)
        image = cv2.resize(np.rint(disparity * 255).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        return np.repeat(image[..., None], 3, axis=-1)


def _crop(image: np.ndarray, top: int, left: int, side: int, fill=0) -> np.ndarray:
    """image[top:top+side, left:left+side], padded with `fill` where the box leaves the image."""
    out = np.full((side, side, *image.shape[2:]), fill, image.dtype)
    height, width = image.shape[:2]
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, height), min(left + side, width)
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return out
