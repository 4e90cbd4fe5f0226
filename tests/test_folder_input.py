"""`hf-maskdp anonymize` input and output folders: every video file is a row, nothing is overwritten unasked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from hf_maskdp.commands.anonymize import load_input, prepare_output_dir  # noqa: E402
from hf_maskdp.data.folder import load_video_folder  # noqa: E402

DATA = Path(__file__).parent / "data"
CLIP = (DATA / "no_person.mp4").read_bytes()  # a real 8-frame clip with nobody in it


def make_folder(root: Path, names: list[str], content: bytes = CLIP) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_names_that_look_like_splits_lose_no_file(tmp_path):
    """datasets' videofolder turned `test*` names into a 'test' split and dropped the other files."""
    names = ["a.mp4", "test1.mp4", "testing.avi", "test_b.mp4", "b.mkv", "c.mov", "train_me.webm"]
    make_folder(tmp_path, names)
    data = load_input(str(tmp_path), report=lambda line: None)
    assert list(data) == ["train"] and len(data["train"]) == len(names)
    assert sorted(data["train"]["source"]) == sorted(names)
    assert "label" not in data["train"].column_names  # a flat folder has no classes


def test_class_folders_at_any_depth_keep_their_label(tmp_path):
    make_folder(tmp_path, ["walk/a.mp4", "walk/test.mp4", "run/outdoor/b.mp4", "run/c.avi"])
    train = load_input(str(tmp_path), report=lambda line: None)["train"]
    labels = {source: train.features["label"].int2str(label) for source, label in zip(train["source"], train["label"])}
    assert labels == {"walk/a.mp4": "walk", "walk/test.mp4": "walk", "run/outdoor/b.mp4": "run", "run/c.avi": "run"}


def test_videos_beside_class_folders_are_refused(tmp_path):
    make_folder(tmp_path, ["loose.mp4", "walk/a.mp4"])
    with pytest.raises(
        ValueError, match="1 videos lie directly in the folder .*loose.mp4.* sub-folders, which are class labels"
    ):
        load_video_folder(tmp_path)


def test_other_files_are_counted_and_named(tmp_path):
    make_folder(tmp_path, ["a.mp4", "c.mp4"])
    make_folder(tmp_path, ["photo.jpg", "notes.txt", ".DS_Store"], b"x")
    lines = []
    data = load_input(str(tmp_path), report=lines.append)
    assert len(data["train"]) == 2
    assert lines == [
        f"read 2 videos from {tmp_path} (train: 2); skipped 3 files that are not videos "
        "(.DS_Store, notes.txt, photo.jpg)"
    ]


def test_a_folder_without_videos_says_so(tmp_path):
    make_folder(tmp_path, ["photo.jpg", "notes.txt"], b"x")
    with pytest.raises(ValueError, match=r"holds no video files \(2 other files, e.g. notes.txt\); video files end in"):
        load_video_folder(tmp_path)


def test_split_folders_and_metadata_are_read(tmp_path):
    """What `save_action_dataset` writes: train/ and test/ with a metadata.csv each."""
    for split, names in (("train", ["x.mp4", "test_y.mp4"]), ("test", ["z.mp4"])):
        make_folder(tmp_path / split, names)
        rows = "\n".join(f"{name},{'wave' if i else 'walk'},{i}" for i, name in enumerate(names))
        (tmp_path / split / "metadata.csv").write_text(f"file_name,label,identity\n{rows}\n")
    data = load_input(str(tmp_path), report=lambda line: None)
    assert {name: len(split) for name, split in data.items()} == {"train": 2, "test": 1}
    assert data["train"].features["label"].names == data["test"].features["label"].names == ["walk", "wave"]
    assert data["train"]["source"] == ["train/test_y.mp4", "train/x.mp4"] and data["test"]["source"] == ["test/z.mp4"]
    assert sorted(data["train"]["identity"]) == ["0", "1"]


def test_dataset_rows_get_a_source_and_keep_their_columns(tmp_path):
    datasets.Dataset.from_dict({"video": [CLIP, CLIP], "clip_id": ["u1", "u2"], "note": ["x", "y"]}).save_to_disk(
        str(tmp_path / "d")
    )
    named = load_input(str(tmp_path / "d"), id_column="clip_id")["train"]
    assert named["source"] == ["u1", "u2"] and named["note"] == ["x", "y"]
    assert load_input(str(tmp_path / "d"))["train"]["source"] == ["train/0", "train/1"]
    with pytest.raises(ValueError, match="--id-column 'nope' is not a column"):
        load_input(str(tmp_path / "d"), id_column="nope")


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = make_folder(tmp_path / "out", ["old_split/data.arrow"], b"stale")
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        prepare_output_dir(str(out), overwrite=False)
    with pytest.raises(ValueError, match="would delete INPUT"):
        prepare_output_dir(str(out), overwrite=True, input_path=str(out / "old_split"))
    prepare_output_dir(str(out), overwrite=True, remove=False)  # the check alone removes nothing
    assert (out / "old_split" / "data.arrow").exists()
    prepare_output_dir(str(out), overwrite=True)
    assert not out.exists()  # the old content is gone before anything is written
    (tmp_path / "empty").mkdir()
    prepare_output_dir(str(tmp_path / "empty"), overwrite=False)  # an empty folder is fine


def test_cli_writes_one_row_per_file_and_refuses_to_overwrite(tmp_path):
    """End to end: 5 real clips (3 named test*), a corrupt one and a photo; every video is a row."""
    clips = {
        "test_face.mp4": "close_up_face.mp4",
        "test1.mp4": "no_person.mp4",
        "testing.mp4": "no_person.mp4",
        "group.mp4": "three_people.mp4",
        "walker.mp4": "partly_out_of_frame.mp4",
    }
    for name, source in clips.items():
        make_folder(tmp_path / "in", [name], (DATA / source).read_bytes())
    make_folder(tmp_path / "in", ["broken.mp4"], b"not a video")
    make_folder(tmp_path / "in", ["photo.jpg"], b"x")
    command = [
        sys.executable,
        "-m",
        "hf_maskdp.cli",
        "anonymize",
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        "--max-frames",
        "3",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "read 6 videos" in done.stdout and "skipped 1 files that are not videos (photo.jpg)" in done.stdout
    out = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert sorted(out["source"]) == sorted([*clips, "broken.mp4"])
    statuses = dict(zip(out["source"], out["anonymization"]))
    assert statuses["broken.mp4"].startswith("error: clip 'broken.mp4'") and statuses["test1.mp4"] == "no_person"
    assert statuses["group.mp4"] != "ok"  # three real people: never published with fewer avatars
    summary = next(line for line in done.stdout.splitlines() if line.startswith("anonymized"))
    assert summary.startswith("anonymized 6 clips") and "error: 1" in summary and "no_person: " in summary
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr and "Traceback" not in again.stderr
