"""End-to-end tests of AvatarAnonymizer on real video files (the astronaut photo as a pan/zoom clip)."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")
mp = pytest.importorskip("mediapipe")

import datasets  # noqa: E402

from hf_maskdp.anonymize.inpaint import person_region  # noqa: E402
from hf_maskdp.anonymize.pipeline import AnonymizationError, AnonymizerConfig, AvatarAnonymizer  # noqa: E402
from hf_maskdp.anonymize.residual import ResidualPersonCheck  # noqa: E402
from hf_maskdp.storage import AVATAR_MASK_BLOCK, DEFAULT_MASK_BLOCK, cover_blocks  # noqa: E402
from hf_maskdp.video import decode_mask, encode_video, load_video_frames  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def pan_zoom(image: np.ndarray, num_frames: int, size: int) -> np.ndarray:
    """A camera zooming into and panning across a photo."""
    height, width = image.shape[:2]
    frames = []
    for t in range(num_frames):
        crop = int(min(height, width) * (0.86 - 0.012 * t))
        x0, y0 = int(0.02 * width) + 3 * t, int(0.04 * height)
        frames.append(cv2.resize(image[y0 : y0 + crop, x0 : x0 + crop], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def write_mp4(frames: np.ndarray, path) -> None:
    """An ordinary (lossy, yuv420p) H.264 mp4, as a camera or a website would produce."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def astronaut_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    write_mp4(pan_zoom(skimage_data.astronaut(), 8, 224), path)
    return path


def two_people(image: np.ndarray, num_frames: int, height: int) -> np.ndarray:
    """Two people: the photo twice side by side (2 x `height` px wide), the camera panning right."""
    pair = np.concatenate([image, image], axis=1)
    frames = []
    for t in range(num_frames):
        crop = int(image.shape[0] * (0.9 - 0.01 * t))
        x0 = 6 * t
        frames.append(
            cv2.resize(pair[10 : 10 + crop, x0 : x0 + 2 * crop], (2 * height, height), interpolation=cv2.INTER_AREA)
        )
    return np.stack(frames)


@pytest.fixture(scope="module")
def two_astronauts_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "two_astronauts.mp4"
    write_mp4(two_people(skimage_data.astronaut(), 6, 256), path)
    return path


@pytest.fixture(scope="module")
def coffee_mp4(tmp_path_factory):  # a real photo with nobody in it
    path = tmp_path_factory.mktemp("clips") / "coffee.mp4"
    write_mp4(pan_zoom(skimage_data.coffee(), 4, 160), path)
    return path


@pytest.fixture(scope="module")
def anonymizer():
    return AvatarAnonymizer(AnonymizerConfig(seed=0))


@pytest.fixture(scope="module")
def astronaut_result(anonymizer, astronaut_mp4):
    frames = load_video_frames(str(astronaut_mp4))
    tracks = anonymizer._pose_source()(frames)
    return frames, tracks, anonymizer.anonymize_clip(str(astronaut_mp4))


@pytest.fixture(scope="module")
def two_astronauts_result(anonymizer, two_astronauts_mp4):
    frames = load_video_frames(str(two_astronauts_mp4))
    tracks = anonymizer._pose_source()(frames)
    return frames, tracks, anonymizer.anonymize_clip(str(two_astronauts_mp4))


@pytest.fixture(scope="module")
def face_detector():
    with mp.solutions.face_detection.FaceDetection(model_selection=1) as detector:
        yield detector


def face_boxes(detector, frame) -> list[tuple[int, int, int, int]]:
    height, width = frame.shape[:2]
    boxes = []
    for detection in detector.process(np.ascontiguousarray(frame)).detections or []:
        box = detection.location_data.relative_bounding_box
        x0, y0 = int(box.xmin * width), int(box.ymin * height)
        boxes.append((max(0, x0), max(0, y0), x0 + int(box.width * width), y0 + int(box.height * height)))
    return boxes


def overlap(a, b) -> float:
    """Intersection over the area of `a`."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(1, (a[2] - a[0]) * (a[3] - a[1]))


# ----------------------------------------------------------------------------- the astronaut


def test_person_found_and_replaced_in_every_frame(astronaut_result):
    frames, tracks, result = astronaut_result
    assert result.status == "ok" and result.num_people == 1
    assert len(tracks) == 1 and tracks[0].detected.all()
    region = person_region(tracks[0], frames.shape[:3], dilation=0.0)
    difference = np.abs(result.frames.astype(int) - frames.astype(int)).mean(-1)
    for t in range(len(frames)):
        assert difference[t][region[t]].mean() > 40, f"frame {t}: the person region barely changed"
        # away from the person region (with margin), the avatar and the border, the background stays
        far = ~person_region(tracks[0], frames.shape[:3], dilation=0.08)[t] & ~result.avatar_mask[t]
        far[:8], far[-8:], far[:, :8], far[:, -8:] = False, False, False, False
        assert far.mean() > 0.1 and difference[t][far].mean() < 2.0


def assert_real_faces_gone(detector, frames, result, num_faces: int) -> None:
    for t in range(len(frames)):
        faces = face_boxes(detector, frames[t])
        assert len(faces) == num_faces, f"frame {t}: BlazeFace should find the real faces in the input"
        # whatever is not avatar (real or inpainted pixels) shows no face there ...
        real_view = np.where(result.sensitive_mask[t][..., None], result.frames[t], 128).astype(np.uint8)
        for face in faces:
            assert all(overlap(face, box) < 0.3 for box in face_boxes(detector, real_view)), f"frame {t}"
            # ... and a face found there in the output is the avatar's own, drawn from public inputs
            for box in face_boxes(detector, result.frames[t]):
                if overlap(face, box) >= 0.3:
                    x0, y0, x1, y1 = box
                    assert (~result.sensitive_mask[t][y0:y1, x0:x1]).mean() > 0.5, f"frame {t}: a real face remains"


def test_real_face_is_gone(astronaut_result, face_detector):
    frames, _, result = astronaut_result
    assert_real_faces_gone(face_detector, frames, result, num_faces=1)


def test_only_fully_covered_avatar_pixels_are_public(astronaut_result):
    _, _, result = astronaut_result
    public = ~result.sensitive_mask
    assert public.mean() > 0.1  # the avatar is a large part of the frame
    assert not (public & ~result.avatar_mask).any()  # public => avatar
    assert result.avatar_mask.any(axis=(1, 2)).all()  # every frame has its avatar


def test_public_pixels_are_computed_from_public_inputs_only(astronaut_result):
    """Same (given, public) poses over different real pixels: identical masks and public pixels."""
    frames, tracks, _ = astronaut_result
    track = tracks[0]
    pose = {"keypoints_2d": track.keypoints_2d, "keypoints_3d": track.keypoints_3d, "visibility": track.visibility}
    # Which pixels are public is the point here. These given poses carry no segmentation, so the
    # erased region is the skeleton's and parts of the bulky spacesuit stay real: the residual
    # check rightly withholds that clip (see test_real_footage.py), so it is off for this test.
    anonymizer = AvatarAnonymizer(pose_source="given", seed=3, residual_check=False)
    other = pan_zoom(skimage_data.chelsea(), len(frames), frames.shape[1])  # a cat: different real pixels
    a = anonymizer.anonymize_clip(frames, {"pose": pose})
    b = anonymizer.anonymize_clip(other, {"pose": pose})
    assert a.status == b.status == "ok"
    np.testing.assert_array_equal(a.sensitive_mask, b.sensitive_mask)
    public = ~a.sensitive_mask
    np.testing.assert_array_equal(a.frames[public], b.frames[public])
    assert (a.frames[~public] != b.frames[~public]).any()


def test_custom_video_column_is_replaced_not_kept_beside(astronaut_result):
    """The real clip must not ride along in its own column next to the anonymized one."""
    from datasets import Dataset

    frames, tracks, _ = astronaut_result
    pose = {
        "keypoints_2d": tracks[0].keypoints_2d[:3],
        "keypoints_3d": tracks[0].keypoints_3d[:3],
        "visibility": tracks[0].visibility[:3],
    }
    # given poses carry no segmentation: the residual check may see spacesuit left real (see above)
    anonymizer = AvatarAnonymizer(pose_source="given", video_column="clip", residual_check=False)
    real = {"path": None, "bytes": encode_video(frames[:3])}
    dataset = Dataset.from_list([{"clip": real, "pose": pose}])
    for kwargs in ({}, {"features": anonymizer.features(dataset.features)}):
        out = dataset.map(anonymizer, batched=True, batch_size=1, **kwargs)
        assert "video" not in out.column_names and out[0]["anonymization"] == "ok"
        clip = load_video_frames(out[0]["clip"])
        assert clip.shape == frames[:3].shape and not np.array_equal(clip, frames[:3])
        assert decode_mask(out[0]["sensitive_mask"]).shape == clip.shape[:3]


def test_smplh_body_on_given_poses(astronaut_result, tmp_path):
    """body_model="smplh" with a synthetic SMPL-H file (the real one is licensed): the same contract."""
    from test_smplh import write_synthetic_smplh

    frames, tracks, _ = astronaut_result
    pose = given_poses(tracks, 3)[0]
    del pose["person_mask"]  # the synthetic body is a stick figure: no coverage check against the spacesuit
    model_path = str(write_synthetic_smplh(tmp_path / "SMPLH_NEUTRAL.npz"))
    given = dict(pose_source="given", residual_check=False)  # no segmentation with these poses (see above)
    smplh = AvatarAnonymizer(**given, body_model="smplh", smplh_model_path=model_path)
    a = smplh.anonymize_clip(frames[:3], {"pose": pose})
    b = smplh.anonymize_clip(pan_zoom(skimage_data.chelsea(), 3, frames.shape[1]), {"pose": pose})
    mannequin = AvatarAnonymizer(**given).anonymize_clip(frames[:3], {"pose": pose})
    assert a.status == b.status == mannequin.status == "ok"
    public = ~a.sensitive_mask
    assert public.any(axis=(1, 2)).all() and not (public & ~a.avatar_mask).any()
    np.testing.assert_array_equal(a.sensitive_mask, b.sensitive_mask)
    np.testing.assert_array_equal(a.frames[public], b.frames[public])  # public pixels: from public inputs only
    assert (a.avatar_mask != mannequin.avatar_mask).mean() > 0.01  # another body than the mannequin
    with pytest.raises(FileNotFoundError, match="mano.is.tue.mpg.de"):
        AnonymizerConfig(body_model="smplh", smplh_model_path=str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="only read with body_model='smplh'"):
        AnonymizerConfig(smplh_model_path=model_path)


# ----------------------------------------------------------------------------- two people


def test_two_people_found_and_replaced_by_two_identities(two_astronauts_result):
    frames, tracks, result = two_astronauts_result
    assert result.status == "ok" and result.num_people == 2
    assert len(tracks) == 2 and all(track.detected.all() for track in tracks)
    assert tracks[0].keypoints_2d[:, 0, 0].max() < 256 <= tracks[1].keypoints_2d[:, 0, 0].min()  # left, then right
    assert len(set(result.identities)) == 2
    width = frames.shape[2]
    region = [person_region(track, frames.shape[:3], dilation=0.0) for track in tracks]
    difference = np.abs(result.frames.astype(int) - frames.astype(int)).mean(-1)
    for t in range(len(frames)):
        for person in region:
            assert difference[t][person[t]].mean() > 40, f"frame {t}: a person region barely changed"
        public = ~result.sensitive_mask[t]
        assert public[:, : width // 2].mean() > 0.1 and public[:, width // 2 :].mean() > 0.1  # an avatar each
        assert not (public & ~result.avatar_mask[t]).any()
    # the same pose twice, two looks: public pixels at the same place in both halves differ
    left, right = result.frames[:, :, : width // 2], result.frames[:, :, width // 2 :]
    both = ~result.sensitive_mask[:, :, : width // 2] & ~result.sensitive_mask[:, :, width // 2 :]
    assert both.sum() > 1000 and np.abs(left[both].astype(int) - right[both].astype(int)).mean() > 30


def test_two_real_faces_are_gone(two_astronauts_result, face_detector):
    frames, _, result = two_astronauts_result
    assert_real_faces_gone(face_detector, frames, result, num_faces=2)


def given_poses(tracks, num_frames: int) -> list[dict]:
    """The tracked people's first frames as a `given` pose column (public data: poses, no pixels)."""
    return [
        {
            "keypoints_2d": track.keypoints_2d[:num_frames].copy(),
            "keypoints_3d": track.keypoints_3d[:num_frames].copy(),
            "visibility": track.visibility[:num_frames],
            "person_mask": track.person_mask[:num_frames],
        }
        for track in tracks
    ]


def test_person_segmentation_attached_to_the_person_is_erased_too(astronaut_mp4, astronaut_result):
    """The pose's own region (its segmentation, the skeleton, a dilation) leaves hair, parts of the bulky suit
    and the helmet in her hands outside; with `attach_segments`, the person segmentation attached to her is
    painted over too."""
    frames, _, before = astronaut_result
    result = AvatarAnonymizer(attach_segments=0.9).anonymize_clip(str(astronaut_mp4))
    added = result.erased_mask & ~before.erased_mask & ~before.avatar_mask & ~result.avatar_mask
    segmentation = ResidualPersonCheck().segmentation(frames) > 0.5
    assert added.sum() > 3000 and (added & segmentation).sum() > 0.5 * added.sum()
    np.testing.assert_array_equal(before.frames[added], frames[added])  # it used to stay real
    assert result.sensitive_mask[added].all()
    painted = (result.frames != frames).any(-1)
    assert painted[added & segmentation].mean() > 0.9  # now inpainted (was 0): the person's pixels are gone


def test_segment_of_a_second_person_without_pose_is_left_for_the_residual_check(two_astronauts_result):
    """A person without a pose is not erased as someone's attached segment: the clip is withheld."""
    frames, tracks, _ = two_astronauts_result
    anonymizer = AvatarAnonymizer(pose_source="given", attach_segments=0.9)
    result = anonymizer.anonymize_clip(frames[:3], {"pose": given_poses(tracks, 3)[:1]})
    assert result.status.startswith("residual_person: a real person outside the avatars")
    second = person_region(tracks[1], frames.shape[:3], dilation=0.0)[:3]
    np.testing.assert_array_equal(result.frames[second], frames[:3][second])  # left real, as evidence


def test_attached_segments_rule():
    """A blob joins the erased region when at least `min_inside` of it lies in the people's region, grown."""
    from hf_maskdp.anonymize.inpaint import attached_segments

    region = np.zeros((1, 100, 100), bool)
    region[0, 20:80, 20:40] = region[0, 20:80, 60:70] = True  # two people's regions
    segmentation = np.zeros_like(region)
    segmentation[0, 15:80, 20:40] = True  # the first with hair above: 1,200 of 1,300 px inside (92 %)
    segmentation[0, 20:80, 60:90] = True  # the second merged with a neighbour: 600 of 1,800 inside (33 %)
    segmentation[0, 85:95, 85:95] = True  # someone else, apart
    attached = attached_segments(segmentation, region, 0.9, dilation=0.0)[0]
    assert attached[15:20, 20:40].all() and attached[13, 25]  # the hair, grown by the (smallest) dilation
    assert not attached[20:80, 75:90].any() and not attached[85:95, 85:95].any()  # left for the residual check
    assert not attached_segments(segmentation, region, 0.95, dilation=0.0)[0, 15:20].any()  # 92 % < 95 %


def test_person_left_real_is_not_copied_into_the_erased_region_of_other_frames():
    """The temporal background is a median over the frames where a pixel is outside the region: a person
    left real there (legs the erased region missed in one frame) would be painted into every other frame,
    static, and so pass the residual check's motion test. Segmented pixels are never copied."""
    from hf_maskdp.anonymize.inpaint import TemporalBackgroundInpainter

    frames = np.full((4, 40, 40, 3), 100, np.uint8)
    frames[0, 10:30, 10:20] = 250  # the legs, left real in frame 0
    region = np.zeros(frames.shape[:3], bool)
    region[1:, 10:30, 10:20] = True  # erased in frames 1-3
    person = frames.max(-1) > 200
    inpaint = TemporalBackgroundInpainter()
    assert inpaint(frames, region)[1:, 10:30, 10:20].min() == 250  # copied: how it went wrong
    assert inpaint(frames, region, never_copy=person)[1:, 10:30, 10:20].max() < 150


def test_second_person_lost_or_unfittable_withholds_the_clip(two_astronauts_result):
    frames, tracks, _ = two_astronauts_result
    anonymizer = AvatarAnonymizer(pose_source="given", max_gap=1)
    lost = given_poses(tracks, 6)
    lost[1]["keypoints_2d"][1:4] = np.nan  # person 1 unseen for 3 frames, more than the gap filler bridges
    result = anonymizer.anonymize_clip(frames, {"pose": lost})
    assert result.status == "partial: 3 of 6 frames have a person without a tracked pose (first: frame 1)"
    unfittable = given_poses(tracks, 2)
    unfittable[1]["keypoints_3d"][:] = 0.0  # a degenerate 3D pose: all landmarks at one point
    row = anonymizer({"video": frames[:2], "pose": unfittable})
    assert row["anonymization"] == "partial: person 1 could not be fitted in 2 of 2 frames"
    assert row["video"] is None  # withheld by default


def test_avatar_not_covering_its_person_is_a_poor_fit(astronaut_result):
    frames, tracks, _ = astronaut_result
    anonymizer = AvatarAnonymizer(pose_source="given", residual_check=False)  # the fit check alone
    assert anonymizer.anonymize_clip(frames[:3], {"pose": given_poses(tracks, 3)}).status == "ok"
    moved = given_poses(tracks, 3)
    moved[0]["person_mask"] = np.roll(
        moved[0]["person_mask"], 110, axis=2
    )  # the person is elsewhere than the pose says
    row = anonymizer({"video": frames[:3], "pose": moved})
    assert row["anonymization"].startswith("partial: poor fit: the avatar of person 0 covers ")
    assert row["video"] is None  # withheld by default


# ----------------------------------------------------------------------------- datasets.map


def test_map_writes_the_storage_columns_and_masks(anonymizer, astronaut_mp4, astronaut_result, tmp_path):
    import json

    from hf_maskdp import __version__, encode_anonymized_clip, read_anonymized_clip
    from hf_maskdp.hub import load_anonymized_dataset

    _, _, result = astronaut_result
    data = datasets.Dataset.from_dict({"video": [{"path": str(astronaut_mp4), "bytes": None}], "label": [7]})
    data = data.cast_column("video", datasets.Video(decode=False))
    out = data.map(anonymizer, batched=True, batch_size=1, features=anonymizer.features(data.features))
    row = out[0]
    assert row["label"] == 7 and row["anonymization"] == "ok" and row["num_people"] == 1
    assert row["storage_format"] == 3 and out.features["avatar_layer"] == datasets.Value("binary")
    assert row["sensitive_mask"]["block"] == DEFAULT_MASK_BLOCK and row["avatar_mask"]["block"] == AVATAR_MASK_BLOCK
    stored = encode_anonymized_clip(result.frames, result.sensitive_mask, fps=result.fps)
    assert row["avatar_layer"] == stored["avatar_layer"]  # what the function writes, no other copy
    frames, mask = read_anonymized_clip(row)
    np.testing.assert_array_equal(mask, cover_blocks(result.sensitive_mask, DEFAULT_MASK_BLOCK))  # rounded out
    assert np.abs(frames.astype(int) - result.frames).mean() < 3  # lossy (crf 18), close
    avatar = decode_mask(row["avatar_mask"])
    np.testing.assert_array_equal(avatar, cover_blocks(result.avatar_mask, AVATAR_MASK_BLOCK))
    assert not (~mask & ~avatar).any() and 0.9 < (~mask).sum() / (~result.sensitive_mask).sum() < 1
    # provenance: who made the row and the invariant it keeps, which the loader then checks on every row
    provenance = json.loads(row["provenance"])
    assert provenance["invariant"] == "public ⊆ avatar" and provenance["version"] == __version__
    assert provenance["config"] == anonymizer.config.to_dict()
    assert not (~result.sensitive_mask & ~result.avatar_mask).any()
    out.save_to_disk(str(tmp_path / "anon"))
    assert len(load_anonymized_dataset(str(tmp_path / "anon"))) == 1
    coarse = AvatarAnonymizer(anonymizer.config, crf=30, preset="ultrafast")._row(result)
    assert len(coarse["video"]["bytes"]) < len(row["video"]["bytes"])  # the quality knobs reach the encoder
    exact = AvatarAnonymizer(anonymizer.config, mask_block=1)._row(result)
    np.testing.assert_array_equal(decode_mask(exact["sensitive_mask"]), result.sensitive_mask)


_NUM_PROC_SCRIPT = """
import sys, datasets, multiprocess, pytest
from hf_maskdp.anonymize.pipeline import AvatarAnonymizer
data = datasets.load_from_disk(sys.argv[1])
anonymizer = AvatarAnonymizer(seed=1, max_frames=3)
features = anonymizer.features(data.features)
# workers first: mediapipe and EGL cannot start in a process forked after they ran
two = data.map(anonymizer, batched=True, batch_size=2, num_proc=2, with_rank=True, features=features)
one = data.map(anonymizer, batched=True, batch_size=2, features=features)
rows = data.map(anonymizer, batched=False, features=features)
assert one["i"] == [0, 1, 2, 3], one["i"]  # nothing dropped or reordered
assert one["anonymization"][:2] == ["ok", "no_person"] and one["anonymization"][2].startswith("error: ")
for other in (two, rows):
    assert other["i"] == one["i"] and other["anonymization"] == one["anonymization"]
    for column in ("video", "sensitive_mask", "avatar_mask", "num_people"):
        assert other[column] == one[column], column
with pytest.raises(RuntimeError, match="forked from a process that already ran"):  # not a crash or hang
    data.map(anonymizer, batched=True, batch_size=2, num_proc=2)
print("same")
"""


def test_map_num_proc_2_with_rank_equals_num_proc_1(tmp_path, astronaut_mp4, coffee_mp4):
    clip = load_video_frames(str(astronaut_mp4), max_frames=3)
    small = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in clip])
    clips = []
    for i, frames in enumerate([small, small[::-1]]):
        write_mp4(frames, tmp_path / f"small{i}.mp4")
        clips.append((tmp_path / f"small{i}.mp4").read_bytes())
    videos = [clips[0], coffee_mp4.read_bytes(), b"not a video", clips[1]]
    datasets.Dataset.from_dict({"video": videos, "i": [0, 1, 2, 3]}).save_to_disk(str(tmp_path / "data"))
    # a fresh process: this one already ran mediapipe and EGL, so it cannot fork workers
    done = subprocess.run(
        [sys.executable, "-c", _NUM_PROC_SCRIPT, str(tmp_path / "data")], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0 and "same" in done.stdout, done.stderr[-3000:]


# ----------------------------------------------------------------------------- failures


def test_clip_with_nobody_is_withheld_by_default(anonymizer, coffee_mp4):
    row = anonymizer({"video": str(coffee_mp4)})
    assert row["anonymization"] == "no_person" and row["video"] is None
    assert decode_mask(row["sensitive_mask"]).shape[0] == 0


def test_keep_option_keeps_clip_with_all_sensitive_mask(coffee_mp4):
    row = AvatarAnonymizer(errors="keep")({"video": str(coffee_mp4)})
    assert row["anonymization"] == "no_person"
    frames = load_video_frames(row["video"])
    mask = decode_mask(row["sensitive_mask"])
    assert mask.shape == frames.shape[:3] and mask.all()


def test_errors_raise_stops_at_first_failure(coffee_mp4):
    with pytest.raises(AnonymizationError, match="coffee.mp4.*no_person"):
        AvatarAnonymizer(errors="raise")({"video": [str(coffee_mp4)]})


def test_person_lost_beyond_gap_filler_is_partial_and_withheld(astronaut_mp4):
    frames = load_video_frames(str(astronaut_mp4), max_frames=4)
    blank = np.full((4, *frames.shape[1:]), 90, np.uint8)  # the person vanishes for 4 frames
    anonymizer = AvatarAnonymizer(max_gap=2)
    result = anonymizer.anonymize_clip(np.concatenate([frames, blank]))
    assert result.status.startswith("partial: 2 of 8 frames")  # 2 filled from neighbours, 2 not
    assert anonymizer({"video": np.concatenate([frames, blank])})["video"] is None


@pytest.mark.parametrize(
    "value, problem",
    [
        (b"\x00\x01garbage" * 100, "cannot decode"),
        (b"", "zero-length"),
        ("/nonexistent/clip.mp4", "not found"),
        (np.zeros((1, 2160, 3840, 3), np.uint8), "max_resolution=1920"),
        (np.zeros((0, 64, 64, 3), np.uint8), "zero frames"),
        ("audio-only", "no video stream"),
    ],
    ids=["corrupt", "empty", "missing", "4k", "no-frames", "audio-only"],
)
def test_bad_input_gets_a_status_naming_clip_and_problem(anonymizer, tmp_path, value, problem):
    if isinstance(value, str) and value == "audio-only":  # a file whose streams hold no video
        value = tmp_path / "sound.m4a"
        with av.open(str(value), "w") as container:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        value = str(value)
    row = anonymizer({"video": value})
    assert row["anonymization"].startswith("error: clip ") and problem in row["anonymization"]
    assert row["video"] is None
    with pytest.raises(AnonymizationError, match=problem):
        AvatarAnonymizer(errors="raise")({"video": [value]})


def test_a_bug_in_a_stage_raises_while_a_bad_clip_gets_its_row_status():
    """Only a clip's documented failures (ClipError: decoding, size, given poses) become a status;
    a ValueError from inside a stage is a bug and must not pass for one withheld clip."""
    anonymizer = AvatarAnonymizer(pose_source="given")

    def pose_stage_with_a_bug(frames, row):
        raise ValueError("operands could not be broadcast together")  # e.g. a shape mistake in the stage

    anonymizer._pose = pose_stage_with_a_bug
    with pytest.raises(ValueError, match="could not be broadcast"):
        anonymizer.anonymize_clip(np.zeros((2, 32, 32, 3), np.uint8), {})
    with pytest.raises(ValueError, match="could not be broadcast"):
        anonymizer({"video": [np.zeros((2, 32, 32, 3), np.uint8)]})  # the map function too, errors="withhold"
    row = anonymizer({"video": b"\x00\x01garbage" * 100})  # fails in decoding, before the broken stage
    assert row["anonymization"].startswith("error: clip <video bytes>: ") and "cannot decode" in row["anonymization"]
    assert row["video"] is None
    ragged = {"pose": {"keypoints_2d": [[0.0], [0.0, 1.0]], "keypoints_3d": []}}
    result = AvatarAnonymizer(pose_source="given").anonymize_clip(np.zeros((2, 32, 32, 3), np.uint8), ragged)
    assert result.status.startswith("error: clip <frames>: column 'pose': keypoints are not numeric arrays")


def test_4k_frame_downscaled_on_request():
    result = AvatarAnonymizer(max_resolution=256, downscale=True).anonymize_clip(np.zeros((1, 2160, 3840, 3), np.uint8))
    assert result.status == "no_person" and result.frames.shape == (1, 144, 256, 3)
    with pytest.raises(ValueError, match="not the given poses"):
        AvatarAnonymizer(downscale=True, pose_source="given")


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="errors='drop'"):
        AnonymizerConfig(errors="drop")
    with pytest.raises(ValueError, match="body_model='smpl'"):
        AnonymizerConfig(body_model="smpl")
    result = AvatarAnonymizer(pose_source="given").anonymize_clip(np.zeros((2, 32, 32, 3), np.uint8), {})
    assert result.status.startswith("error: ") and "column 'pose'" in result.status


# ----------------------------------------------------------------------------- CLI


def test_cli_anonymizes_a_video_folder_and_pushes_privately(hub, tmp_path, astronaut_mp4, coffee_mp4):
    for label, clip in (("astronaut", astronaut_mp4), ("empty", coffee_mp4)):
        (tmp_path / "in" / label).mkdir(parents=True)
        (tmp_path / "in" / label / "clip.mp4").write_bytes(clip.read_bytes())
    command = [
        sys.executable,
        "-m",
        "hf_maskdp.cli",
        "anonymize",
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        "--max-frames",
        "3",
        "--push-to-hub",
        "alice/anonymized-cli",
        "--token",
        "hf_alice_write",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "anonymized 2 clips (3 frames kept), 1 people found, 1 failures (no_person: 1, ok: 1)" in done.stdout
    assert "Anonymizing" in done.stderr  # the tqdm progress bar
    assert (
        "inference_feedback_manager" not in done.stderr and "absl::InitializeLog" not in done.stderr
    )  # mediapipe's C++
    out = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert sorted(out["anonymization"]) == ["no_person", "ok"] and "label" in out.column_names
    assert "(private)" in done.stdout and hub.repo("alice/anonymized-cli", "dataset").private


@pytest.mark.parametrize(
    "options, problem",
    [
        ((), "does not exist"),
        (
            ("--body-model", "smplh", "--smplh-model-path", "missing.npz"),
            "Download the SMPL-H model files from https://mano",
        ),
        (("--refiner-context", "real"), "--refiner-context and --refiner-options need --refiner ID"),
    ],
    ids=["input", "smplh-file", "refiner"],
)
def test_cli_bad_input_is_one_line(tmp_path, options, problem):
    command = [
        sys.executable,
        "-m",
        "hf_maskdp.cli",
        "anonymize",
        str(tmp_path / "x.mp4"),
        str(tmp_path / "o"),
        *options,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr
    assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_body_left_real_rule():
    """A segment reaching into a found person's region counts when enough of it is left uncovered and still
    looks like a person in the output; a spread that vanishes with the person, a segment nearly all inside the
    region or someone else apart do not (those are other rules' business)."""
    from hf_maskdp.anonymize.residual import body_left_real

    region = np.zeros((100, 100), bool)
    region[10:50, 40:60] = True  # the found person's erase region: head and torso
    covered = region.copy()
    legs = np.zeros_like(region)
    legs[10:90, 42:58] = True  # their whole body segmented: 640 of 1,280 px inside (50 %)
    assert body_left_real(legs, region, covered, still_segmented=legs)
    assert not body_left_real(legs, region, covered, still_segmented=np.zeros_like(legs))  # a spread, gone
    assert not body_left_real(legs, region, covered | legs, still_segmented=legs)  # all covered
    hair = np.zeros_like(region)
    hair[8:50, 42:58] = True  # 2 rows above the region: 95 % inside
    assert not body_left_real(hair, region, covered, still_segmented=hair)
    apart = np.zeros_like(region)
    apart[60:95, 5:20] = True  # someone else, not touching the region: for the motion and pose rules
    assert not body_left_real(apart, region, covered, still_segmented=apart)


def test_found_persons_legs_left_real_withhold_the_clip():
    """A rendered person of the demo dataset (validation clip 12) whose pose ends at the knees: the avatar and
    the erased region miss the legs, which stay real and standing (no motion), and a legs-only segment gives
    no pose in a crop. The check's motion and pose rules let it pass; the found person's own segment does not."""
    from hf_maskdp.data.build import ClipGenerator
    from hf_maskdp.quickstart import QuickstartConfig, generator_config

    clip = ClipGenerator(generator_config(QuickstartConfig.preset("demo"), "ntu")).clip("validation", 12, label=1)
    frames = load_video_frames(encode_video(clip["frames"], fps=25))  # stored and decoded as the demo does
    result = AvatarAnonymizer().anonymize_clip(frames)
    left_real = clip["person_mask"] & ~result.erased_mask & ~result.avatar_mask
    assert left_real.reshape(len(frames), -1).sum(1).max() > 0.03 * frames[0, ..., 0].size  # the legs: a leak
    assert result.status.startswith("residual_person: a real person outside the avatars")
    assert "a found person's body beside their avatar" in result.status
    without_real_frames = ResidualPersonCheck().check(result.frames, result.avatar_mask, result.erased_mask)
    assert without_real_frames is None  # the motion and pose rules alone pass it
