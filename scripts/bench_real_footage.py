"""The anonymizer on the real clips in tests/data (320x240, 8 frames each; sources in tests/data/README.md).

    .venv/bin/python scripts/bench_real_footage.py [--repeats 1]

Per clip: status, people found vs present, and residual detections in a published clip (frames
with a face, a hand or a pose-confirmed person segment off the avatars, inpainted pixels included,
as tests/test_real_footage.py counts them: goal 0). Then frames per second end to end (the map
function on one row: decode, every stage, lossless encode) with the recall search and the
residual check on (the default) and off, side by side.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from hf_maskdp.anonymize.pipeline import AvatarAnonymizer
from hf_maskdp.anonymize.residual import ResidualPersonCheck

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
PEOPLE = {
    "close_up_face.mp4": 1,
    "no_person.mp4": 0,
    "one_person.mp4": 1,
    "partly_out_of_frame.mp4": 1,
    "three_people.mp4": 3,
}
GOAL_FPS = 10.0


def residual_detections(check: ResidualPersonCheck, result) -> int:
    """Frames of a published clip with a face, a hand or a pose-confirmed person segment off the avatars."""
    return sum(
        bool(check.uncovered(evidence, check.grow(result.avatar_mask[t]), result.frames[t]))
        for t, evidence in enumerate(check.evidence(result.frames))
    )


def fps(anonymizer: AvatarAnonymizer, repeats: int) -> float:
    frames, seconds = 0, 0.0
    for _ in range(repeats):
        for name in PEOPLE:
            video = {"path": None, "bytes": (DATA / name).read_bytes()}
            start = time.perf_counter()
            anonymizer({"video": video})
            seconds += time.perf_counter() - start
            frames += 8
    return frames / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    check = ResidualPersonCheck()
    anonymizer = AvatarAnonymizer()
    statuses: Counter = Counter()
    print(f"{'clip':26s} {'status':60s} people found/present  residual frames")
    for name, present in PEOPLE.items():
        result = anonymizer.anonymize_clip(str(DATA / name))
        statuses[result.status.split(":")[0]] += 1
        residual = residual_detections(check, result) if result.ok else "-"
        print(f"{name:26s} {result.status[:60]:60s} {result.num_people}/{present}{'':18s} {residual}")
    print("clips by status:", dict(statuses))
    anonymizer({"video": str(DATA / "no_person.mp4")})  # warm up both
    plain = AvatarAnonymizer(search_crops=False, residual_check=False)
    plain({"video": str(DATA / "no_person.mp4")})
    with_checks, without = fps(anonymizer, args.repeats), fps(plain, args.repeats)
    print(
        f"end to end at 320x240: {with_checks:.1f} fps with recall search + residual check, {without:.1f} fps without "
        f"({with_checks / without:.2f}x); goal {GOAL_FPS:.0f} fps {'met' if with_checks >= GOAL_FPS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
