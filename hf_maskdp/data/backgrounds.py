"""Scene backgrounds from the real photos that ship with scikit-image.

Grey texture photos are tinted to look like a scene (a wall, a lawn); every photo is
softened (slight blur, lower contrast) like an out-of-focus background, which keeps a
rendered person easy to tell from the scene, as a real camera's depth of field would.
"""

from __future__ import annotations

import functools

import numpy as np

# name -> (skimage.data loader, tint for grey photos or None)
BACKGROUNDS = {
    "brick_wall": ("brick", (0.85, 0.55, 0.45)),
    "lawn": ("grass", (0.55, 0.8, 0.4)),
    "gravel_yard": ("gravel", (0.9, 0.85, 0.7)),
    "cafe": ("coffee", None),
    "launch_site": ("rocket", None),
    "living_room": ("chelsea", None),
    "planetarium": ("hubble_deep_field", None),
    "garage": ("stereo_motorcycle", None),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)  # the private data's scenes
# Scenes of the public corpus (pretraining, public-view fills): photos no private clip uses.
PUBLIC_BACKGROUNDS = {
    "moonscape": ("moon", (0.8, 0.8, 0.75)),
    "coin_table": ("coins", (0.9, 0.75, 0.5)),
    "clock_shop": ("clock", (0.7, 0.75, 0.9)),
    "lab_bench": ("immunohistochemistry", None),
    "reading_room": ("page", (0.95, 0.9, 0.8)),
    "cell_mural": ("cell", (0.6, 0.8, 0.85)),
}
PUBLIC_BACKGROUND_NAMES = tuple(PUBLIC_BACKGROUNDS)


def choose_background(
    label: int, rng: np.random.Generator, bias: float = 0.6, scenes: tuple[str, ...] = BACKGROUND_NAMES
) -> str:
    """Scene context that hints at the label without deciding it, as a kitchen hints at cooking:
    with probability `bias` the action's preferred scene, otherwise any of `scenes`."""
    if rng.random() < bias:
        return scenes[label % len(scenes)]
    return scenes[rng.integers(len(scenes))]


@functools.lru_cache(maxsize=None)
def load_background(name: str) -> np.ndarray:
    """The full softened photo as float32 (H, W, 3) in [0, 255]."""
    from scipy.ndimage import gaussian_filter
    from skimage import data

    loader, tint = {**BACKGROUNDS, **PUBLIC_BACKGROUNDS}[name]
    photo = getattr(data, loader)()
    if isinstance(photo, tuple):  # stereo_motorcycle -> (left, right, disparity)
        photo = photo[0]
    photo = np.asarray(photo, dtype=np.float32)
    if photo.ndim == 2:
        photo = photo[..., None] * np.asarray(tint, dtype=np.float32)
    photo = gaussian_filter(photo[..., :3], sigma=(1.5, 1.5, 0))
    return 0.65 * photo + 0.35 * photo.mean((0, 1))


def background_crop(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (60-100 % of the short side) resized to `size`, uint8."""
    from PIL import Image

    photo = load_background(name)
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = np.clip(photo[top : top + side, left : left + side], 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def public_scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a public scene (`PUBLIC_BACKGROUNDS`) resized to (height, width), uint8.

    It depends on `rng` alone, never on a record: the public view may paint it where a clip's
    pixels are sensitive, as an avatar's surroundings that carry no real information."""
    from PIL import Image

    photo = load_background(PUBLIC_BACKGROUND_NAMES[rng.integers(len(PUBLIC_BACKGROUND_NAMES))])
    rows, cols = photo.shape[:2]
    scale = rng.uniform(0.6, 1.0) * min(rows / height, cols / width)
    crop_h, crop_w = max(1, int(height * scale)), max(1, int(width * scale))
    top, left = rng.integers(0, rows - crop_h + 1), rng.integers(0, cols - crop_w + 1)
    crop = np.clip(photo[top : top + crop_h, left : left + crop_w], 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.BILINEAR))
