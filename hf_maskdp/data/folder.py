"""A plain folder of videos as a `DatasetDict`, with every video file in exactly one row.

`datasets.load_dataset("videofolder", data_dir=...)` infers splits from file names: in a flat
folder where some files are named `test*.mp4` it builds a "test" split of those and leaves the
others out without a word. This reader decides nothing from file names:

- every file with a video extension (`VIDEO_EXTENSIONS`) becomes one row, in one split, "train",
  unless the folder holds only split folders (`train/`, `test/`, `validation/`; what
  `hf_maskdp.data.build.save_action_dataset` writes), which then become the splits;
- sub-folders are class labels: `label` is a `ClassLabel` named after the first folder below the
  split (`walk/a.mp4` and `run/outdoor/b.mp4`: "walk" and "run"). Videos both directly in the folder
  and in sub-folders are refused (they would have no label);
- a `metadata.csv` or `metadata.jsonl` next to the videos (column `file_name`, relative to it) adds
  its columns; a string `label` column there becomes a `ClassLabel` and replaces folder labels;
- `source` holds each file's path relative to the folder (to join rows back to annotations);
- other files are skipped and returned, so the caller can say how many and which.

The number of rows is checked against the number of video files found.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTENSIONS = (
    ".3gp",
    ".avi",
    ".flv",
    ".m4v",
    ".mkv",
    ".mov",
    ".mp4",
    ".mpeg",
    ".mpg",
    ".ogv",
    ".ts",
    ".webm",
    ".wmv",
)
SPLIT_FOLDERS = ("train", "validation", "test")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


@dataclass
class VideoFolder:
    """What `load_video_folder` found: the dataset, and the files it did not read."""

    dataset: object  # datasets.DatasetDict
    skipped: list[str] = field(default_factory=list)  # paths relative to the folder

    def describe(self, root) -> str:
        """One line: videos read per split, files skipped (named, up to five)."""
        splits = ", ".join(f"{name}: {len(split)}" for name, split in self.dataset.items())
        line = f"read {sum(len(s) for s in self.dataset.values())} videos from {root} ({splits})"
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
            line += f"; skipped {len(self.skipped)} files that are not videos ({shown})"
        return line


def load_video_folder(root) -> VideoFolder:
    """Read `root` as described in the module docstring; raise on anything that would lose a video."""
    import datasets

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    videos = [path for path in files if path.suffix.lower() in VIDEO_EXTENSIONS]
    skipped = [
        path.relative_to(root).as_posix()
        for path in files
        if path.suffix.lower() not in VIDEO_EXTENSIONS and path.name not in METADATA_FILES
    ]
    if not videos:
        raise ValueError(
            f"{root} holds no video files ({len(files)} other files{', e.g. ' + skipped[0] if skipped else ''}); "
            f"video files end in {', '.join(VIDEO_EXTENSIONS)}"
        )
    top = {path.relative_to(root).parts[0] for path in videos}  # other files never change the layout
    split_layout = all((root / name).is_dir() and name in SPLIT_FOLDERS for name in top)
    split_roots = (
        {name: root / name for name in sorted(top, key=SPLIT_FOLDERS.index)} if split_layout else {"train": root}
    )
    rows = {
        split: _rows(root, split_root, [path for path in videos if path.is_relative_to(split_root)])
        for split, split_root in split_roots.items()
    }
    features = _features([row for split_rows in rows.values() for row in split_rows])
    result = datasets.DatasetDict(
        {split: datasets.Dataset.from_list(split_rows, features=features) for split, split_rows in rows.items()}
    )
    loaded = sum(len(split) for split in result.values())
    if loaded != len(videos):  # the guarantee of this reader: one row per video file
        raise RuntimeError(f"{root}: found {len(videos)} video files but built {loaded} rows")
    return VideoFolder(result, skipped)


def _rows(root: Path, split_root: Path, videos: list[Path]) -> list[dict]:
    """One row per video: `video`, `source`, and `label` (from sub-folders) or the metadata columns."""
    rows = [
        {"video": {"path": str(path.resolve()), "bytes": None}, "source": path.relative_to(root).as_posix()}
        for path in videos
    ]
    metadata = _metadata(split_root, videos)
    if metadata is not None:
        for row, path in zip(rows, videos):
            row.update(metadata[path])
        return rows
    depth = [len(path.relative_to(split_root).parts) for path in videos]
    if any(d > 1 for d in depth):
        loose = [path.relative_to(root).as_posix() for path, d in zip(videos, depth) if d == 1]
        if loose:
            raise ValueError(
                f"{split_root}: {len(loose)} videos lie directly in the folder (e.g. {loose[0]}) and "
                f"{len(videos) - len(loose)} in sub-folders, which are class labels; put every video in a "
                "class folder, or all of them directly in the folder (no labels)"
            )
        for row, path in zip(rows, videos):
            row["label"] = path.relative_to(split_root).parts[0]
    return rows


def _features(rows: list[dict]):
    """Features of all splits together: `label` strings become one `ClassLabel` (sorted names);
    metadata columns get the types `datasets` infers."""
    from datasets import ClassLabel, Dataset, Features, Value

    from hf_maskdp.video import video_feature

    columns = list(dict.fromkeys(key for row in rows for key in row))
    for row in rows:  # a metadata column missing from some rows is None there
        for key in columns:
            row.setdefault(key, None)
    features = {"video": video_feature(), "source": Value("string")}
    labels = [row.get("label") for row in rows]
    if "label" in columns and all(isinstance(label, str) for label in labels):
        features["label"] = ClassLabel(names=sorted(set(labels)))
    others = [key for key in columns if key not in features]
    if others:
        inferred = Dataset.from_list([{key: row[key] for key in others} for row in rows]).features
        features.update({key: inferred[key] for key in others})
    return Features({key: features[key] for key in columns})


def _metadata(split_root: Path, videos: list[Path]) -> dict[Path, dict] | None:
    """Rows of the metadata files under `split_root`, keyed by video path; None without any."""
    found: dict[Path, dict] = {}
    files = [path for name in METADATA_FILES for path in split_root.rglob(name)]
    if not files:
        return None
    for metadata_file in files:
        if metadata_file.suffix == ".csv":
            with open(metadata_file, newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
        else:
            records = [
                json.loads(line) for line in metadata_file.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        for record in records:
            if "file_name" not in record:
                raise ValueError(
                    f"{metadata_file}: every row needs a 'file_name' column (the video's path relative to it)"
                )
            path = metadata_file.parent / record.pop("file_name")
            if not path.is_file():
                raise FileNotFoundError(f"{metadata_file}: lists {path.name}, which is not in {metadata_file.parent}")
            found[path.resolve()] = record
    found = {path: found[path.resolve()] for path in videos if path.resolve() in found}
    missing = [path for path in videos if path not in found]
    if missing:
        raise ValueError(f"{missing[0]} has no row in the metadata files ({', '.join(map(str, files))}); add one")
    return found
