"""How the real clips in this folder were cut (see README.md): `python cut_clips.py PATH/TO/vtest.avi`.

Each clip is a few frames of a crop, resized to 320x240 and stored as an ordinary lossy H.264 mp4
(yuv420p, crf 23), as a camera or a website would produce.
"""

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

HERE = Path(__file__).parent
SIZE = (320, 240)
# name: (first frame, number of frames, crop x0, y0, x1, y1) in the 480x360 pedestrian video
PEDESTRIAN_CROPS = {
    "one_person": (0, 8, 120, 120, 220, 195),
    "three_people": (500, 8, 320, 140, 420, 215),
    "partly_out_of_frame": (0, 8, 175, 125, 275, 200),
    "no_person": (0, 8, 260, 200, 420, 320),
}


def write_mp4(frames: np.ndarray, path: Path, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "23"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def pedestrian_clips(source: str) -> None:
    with av.open(source) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(520), container.decode(video=0))]
    for name, (start, count, x0, y0, x1, y1) in PEDESTRIAN_CROPS.items():
        clip = [cv2.resize(f[y0:y1, x0:x1], SIZE, interpolation=cv2.INTER_CUBIC) for f in frames[start : start + count]]
        write_mp4(np.stack(clip), HERE / f"{name}.mp4")


def close_up_face() -> None:
    """The astronaut photo (public domain), the camera moving slowly across her face."""
    image = data.astronaut()
    clip = [
        cv2.resize(image[20 + 2 * t : 230 + 2 * t, 130 + 3 * t : 410 + 3 * t], SIZE, interpolation=cv2.INTER_AREA)
        for t in range(8)
    ]
    write_mp4(np.stack(clip), HERE / "close_up_face.mp4")


if __name__ == "__main__":
    pedestrian_clips(sys.argv[1])
    close_up_face()
