"""Composite the rendered avatars over the inpainted background, and say which pixels are public.

The mask contract (docs/privacy.md, "Records, masks and masked adjacency"): a pixel is public (`sensitive == False`) only
if its value is computed from public inputs alone. Here that is exactly the pixels fully
covered by the render (coverage == 1): their colour is copied from the render, which read
only the avatar meshes. Antialiased edges mix in the real background, so they stay
sensitive, as does everything else.
"""

from __future__ import annotations

import numpy as np

from hf_maskdp.anonymize.render import RenderOutput


def composite(background: np.ndarray, render: RenderOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (frame uint8 (H, W, 3), sensitive bool (H, W), avatar bool (H, W)).

    `avatar` marks every pixel the avatar touches (edges included), `sensitive` is True
    everywhere except the fully covered avatar pixels.
    """
    public = render.coverage >= 1.0
    avatar = render.coverage > 0.0
    frame = background.copy()
    edge = avatar & ~public
    if edge.any():
        alpha = render.coverage[edge][:, None]
        blended = render.rgb[edge] * alpha + background[edge].astype(np.float32) * (1.0 - alpha)
        frame[edge] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    frame[public] = render.rgb[public]  # a copy, never a blend: bit-exact public pixels
    return frame, ~public, avatar
