"""Attack the anonymization: who is in the clip, from original, anonymized and public-view clips?

    .venv/bin/python scripts/attack_anonymization.py [--identities 8 --train 96 --test 48 --frames 16 --size 112]

1. Builds the embedded action dataset (it knows each clip's identity), anonymizes it with
   `AvatarAnonymizer`, and trains identity probes (`hf_maskdp.privacy.attacks`: a linear probe on
   colour features and a tiny 3D CNN) on the train split of each view, scored on held-out test
   clips of the same people:
     original      the input clips
     anonymized    the published clips as a whole (avatar + inpainted background, all pixels)
     public view   what MaskDP's public branch reads (`VideoClipCollator.public_batch`)
     broken masks  control: the original clips with the real person marked public; the public
                   view probe must catch this, or its "chance" on the real public view means nothing.
2. Residue: true person pixels (ground truth `person_mask`) left unchanged in the published video
   (within `UNCHANGED_TOLERANCE`: the stored clip is lossy).
3. Faces: BlazeFace full range on the astronaut photo (scikit-image) as a pan/zoom clip, before and after.

Prints markdown tables to paste into docs/privacy.md, headed by the command that made them.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
from hf_maskdp.constants import STATUS_OK
from hf_maskdp.data import build_action_dataset
from hf_maskdp.privacy.attacks import clip_pixels, face_check, identity_probe
from hf_maskdp.storage import encode_anonymized_clip, read_anonymized_clip
from hf_maskdp.training.collator import VideoClipCollator
from hf_maskdp.video import decode_mask, load_video_frames

UNCHANGED_TOLERANCE = 8  # per channel: a real pixel through the lossy storage still counts as left unchanged


def anonymized_dataset(args):
    """The action dataset, anonymized, with the input video kept in an `original` column."""
    data = build_action_dataset(
        num_train=args.train,
        num_test=args.test,
        num_frames=args.frames,
        size=args.size,
        num_identities=args.identities,
        seed=args.seed,
    )
    anonymizer = AvatarAnonymizer(AnonymizerConfig(seed=args.seed, errors="keep"))
    data = data.map(lambda row: {"original": row["video"]}, features=None)
    return data.map(anonymizer, batched=True, batch_size=4, features=anonymizer.features(data["train"].features))


def broken_masks(rows):
    """Control: a broken anonymizer that publishes the real person (marked public) and hides the rest."""
    return [
        {**row, **encode_anonymized_clip(load_video_frames(row["original"]), ~decode_mask(row["person_mask"]))}
        for row in rows
    ]  # stored as the anonymizer stores clips (format 2)


def probe_table(data, args) -> list[str]:
    full = VideoClipCollator(num_frames=args.probe_frames, image_size=args.image_size)
    original = VideoClipCollator(num_frames=args.probe_frames, image_size=args.image_size, video_column="original")
    views = {
        "original": lambda rows: clip_pixels(rows, original),
        "anonymized": lambda rows: clip_pixels(rows, full),
        "public view": lambda rows: clip_pixels(rows, full, public_view=True),
        "broken masks (control)": lambda rows: clip_pixels(broken_masks(rows), full, public_view=True),
    }
    train, test = list(data["train"]), list(data["test"])
    train_ids, test_ids = [r["identity"] for r in train], [r["identity"] for r in test]
    lines = [
        "| view | probe | correct / clips | accuracy | 95% CI (Clopper-Pearson) | chance | p (> chance) |",
        "|---|---|---|---|---|---|---|",
    ]
    for view, pixels in views.items():
        train_x, test_x = pixels(train), pixels(test)
        for probe in args.probes:
            r = identity_probe(train_x, train_ids, test_x, test_ids, probe=probe, view=view, seed=args.seed)
            lines.append(
                f"| {view} | {probe} | {r.correct} / {r.total} | {r.accuracy:.2f} | "
                f"[{r.ci_low:.2f}, {r.ci_high:.2f}] | {r.chance:.2f} | {r.p_value:.2g} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def residue_table(data) -> list[str]:
    """How much of the real person survives in the published video, and where the mask says it is."""
    import cv2

    left, left_inside, public_person, status = [], [], [], []
    for split in data.values():
        for row in split:
            status.append(row["anonymization"])
            if row["anonymization"] != STATUS_OK:  # kept all-sensitive (errors="keep"); "withhold" would not publish it
                continue
            before, (after, sensitive) = load_video_frames(row["original"]).astype(int), read_anonymized_clip(row)
            person = decode_mask(row["person_mask"])
            # the stored clip is lossy (crf 18): "unchanged" allows the codec's error (mostly <= 8 per channel)
            unchanged = (np.abs(before - after) <= UNCHANGED_TOLERANCE).all(-1) & person
            left.append(unchanged.sum() / max(1, person.sum()))
            # at least 2 px inside the silhouette: whole real pixels, not antialiased edges
            inside = np.stack([cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)) for m in person]).astype(bool)
            left_inside.append((unchanged & inside).sum() / max(1, inside.sum()))
            public_person.append((person & ~sensitive).sum() / max(1, person.sum()))
    ok = sum(s == STATUS_OK for s in status)
    left, left_inside = np.array(left), np.array(left_inside)
    return [
        "| clips (status ok) | over ok clips: real person pixels unchanged in output, mean / max (clips with any) | "
        "same, >= 2 px inside the silhouette | person pixels under public avatar pixels (mean) |",
        "|---|---|---|---|",
        f"| {len(status)} ({ok}) | {left.mean():.2%} / {left.max():.2%} ({(left > 0).sum()}) | "
        f"{left_inside.mean():.2%} / {left_inside.max():.2%} ({(left_inside > 0).sum()}) | {np.mean(public_person):.1%} |",
    ]


def astronaut_clip(num_frames: int = 8, size: int = 224) -> np.ndarray:
    """The astronaut photo (a real person) as a camera zooming in and panning."""
    import cv2
    import skimage.data

    image = skimage.data.astronaut()
    frames = []
    for t in range(num_frames):
        crop = int(min(image.shape[:2]) * (0.86 - 0.012 * t))
        x0, y0 = int(0.02 * image.shape[1]) + 3 * t, int(0.04 * image.shape[0])
        frames.append(cv2.resize(image[y0 : y0 + crop, x0 : x0 + crop], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def face_table(seed: int) -> list[str]:
    frames = astronaut_clip()
    result = AvatarAnonymizer(AnonymizerConfig(seed=seed)).anonymize_clip(frames)
    check = face_check(frames, result.frames, result.sensitive_mask)
    return [
        f"Astronaut clip, {len(frames)} frames of 224x224, anonymizer status `{result.status}`; "
        "BlazeFace full range (`model_selection=1`), faces per frame:",
        "",
        "| frame | " + " | ".join(str(t) for t in range(len(frames))) + " |",
        "|---|" + "---|" * len(frames),
        "| input | " + " | ".join(map(str, check.input_faces)) + " |",
        "| output | " + " | ".join(map(str, check.output_faces)) + " |",
        "| output, on sensitive pixels | " + " | ".join(map(str, check.output_faces_on_sensitive)) + " |",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--train", type=int, default=96, help="training clips for the probes")
    parser.add_argument("--test", type=int, default=48, help="held-out clips (same people)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112, help="rendered frame size")
    parser.add_argument("--image-size", type=int, default=64, help="probe input size (the collator's image_size)")
    parser.add_argument("--probe-frames", type=int, default=8, help="frames per clip the probes see")
    parser.add_argument("--probes", default="linear,cnn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.probes = args.probes.split(",")
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    data = anonymized_dataset(args)
    print(
        f"built and anonymized {sum(map(len, data.values()))} clips in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    command = "    .venv/bin/python scripts/attack_anonymization.py " + " ".join(sys.argv[1:] if argv is None else argv)
    tables = [
        command,
        "",
        f"Identity probes ({args.identities} identities; chance = accuracy of guesses independent "
        "of the identity with the probe's own guess frequencies):",
        "",
    ]
    tables += probe_table(data, args)
    tables += ["", "Residue of the real person in the published clips:", ""] + residue_table(data)
    tables += [""] + face_table(args.seed)
    print("\n".join(tables))


if __name__ == "__main__":
    main()
