"""Readers for the folder layouts of real action-recognition datasets.

Each reader takes a folder as the dataset's official archives extract and returns a
`datasets.DatasetDict` with one entry per split of the chosen evaluation protocol:

- `video`: `{"path", "bytes": None}` (`datasets.Video(decode=False)`): files are read lazily, by path;
- `label`: a `ClassLabel` with the dataset's official class names in its official id order;
- `video_id`: the file name without its extension;
- metadata parsed from the official file names (subject, camera, ...).

| layout      | folder                                                    | protocols                                  |
|-------------|-----------------------------------------------------------|--------------------------------------------|
| `ucf101`    | `UCF-101/<Class>/v_<Class>_gGG_cCC.avi`, `ucfTrainTestlist/` | official splits 1-3                     |
| `hmdb51`    | `hmdb51_org/<class>/<name>.avi`, `testTrainMulti_7030_splits/` | official splits 1-3                   |
| `ntu60`     | `nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi`               | `cross_subject`, `cross_view`              |
| `smarthome` | `mp4/<Action>_pNN_rNN_vNN_cNN.mp4`                        | `cross_subject`, `cross_view_1`, `cross_view_2` |

Identity metadata (`IDENTITY_COLUMNS`: which person or actor group a clip shows, and the file
name that encodes it) is public under MaskDP (like labels), so nothing protects it: drop it
before publishing an anonymized dataset (scripts/anonymize_dataset.py does by default).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

IDENTITY_COLUMNS = ("video_id", "subject", "group")

# --------------------------------------------------------------------------- class lists

# NTU RGB+D 60, action ids A001-A060 (Shahroudy et al. 2016, github.com/shahroudy/NTURGB-D).
NTU60_CLASSES = (
    "drink water",
    "eat meal/snack",
    "brushing teeth",
    "brushing hair",
    "drop",
    "pickup",
    "throw",
    "sitting down",
    "standing up (from sitting position)",
    "clapping",
    "reading",
    "writing",
    "tear up paper",
    "wear jacket",
    "take off jacket",
    "wear a shoe",
    "take off a shoe",
    "wear on glasses",
    "take off glasses",
    "put on a hat/cap",
    "take off a hat/cap",
    "cheer up",
    "hand waving",
    "kicking something",
    "reach into pocket",
    "hopping (one foot jumping)",
    "jump up",
    "make a phone call/answer phone",
    "playing with phone/tablet",
    "typing on a keyboard",
    "pointing to something with finger",
    "taking a selfie",
    "check time (from watch)",
    "rub two hands together",
    "nod head/bow",
    "shake head",
    "wipe face",
    "salute",
    "put the palms together",
    "cross hands in front (say stop)",
    "sneeze/cough",
    "staggering",
    "falling",
    "touch head (headache)",
    "touch chest (stomachache/heart pain)",
    "touch back (backache)",
    "touch neck (neckache)",
    "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm",
    "punching/slapping other person",
    "kicking other person",
    "pushing other person",
    "pat on back of other person",
    "point finger at the other person",
    "hugging other person",
    "giving something to other person",
    "touch other person's pocket",
    "handshaking",
    "walking towards each other",
    "walking apart from each other",
)
NTU60_CROSS_SUBJECT_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
NTU60_CROSS_VIEW_TRAIN = {2, 3}  # cameras; camera 1 is the test view

# Toyota Smarthome trimmed clips (Das et al. 2019): ids as in the official skeleton baseline
# (smarthome_gendata.py), 0-indexed. The cross-view protocols use their own 19 classes.
SMARTHOME_CLASSES = (
    "Cook.Cleandishes",
    "Cook.Cleanup",
    "Cook.Cut",
    "Cook.Stir",
    "Cook.Usestove",
    "Cutbread",
    "Drink.Frombottle",
    "Drink.Fromcan",
    "Drink.Fromcup",
    "Drink.Fromglass",
    "Eat.Attable",
    "Eat.Snack",
    "Enter",
    "Getup",
    "Laydown",
    "Leave",
    "Makecoffee.Pourgrains",
    "Makecoffee.Pourwater",
    "Maketea.Boilwater",
    "Maketea.Insertteabag",
    "Pour.Frombottle",
    "Pour.Fromcan",
    "Pour.Fromkettle",
    "Readbook",
    "Sitdown",
    "Takepills",
    "Uselaptop",
    "Usetelephone",
    "Usetablet",
    "Walk",
    "WatchTV",
)
SMARTHOME_CROSS_VIEW_CLASSES = (
    "Cutbread",
    "Drink.Frombottle",
    "Drink.Fromcan",
    "Drink.Fromcup",
    "Drink.Fromglass",
    "Eat.Attable",
    "Eat.Snack",
    "Enter",
    "Getup",
    "Leave",
    "Pour.Frombottle",
    "Pour.Fromcan",
    "Readbook",
    "Sitdown",
    "Takepills",
    "Uselaptop",
    "Usetablet",
    "Usetelephone",
    "Walk",
)
SMARTHOME_CROSS_SUBJECT_TRAIN = {3, 4, 6, 7, 9, 12, 13, 15, 17, 19, 25}  # test: 2, 10, 11, 14, 16, 18, 20
SMARTHOME_CROSS_VIEW_CAMERAS = {  # split -> cameras
    "cross_view_1": {"train": {1}, "validation": {5}, "test": {2}},
    "cross_view_2": {"train": {1, 3, 4, 6, 7}, "validation": {5}, "test": {2}},
}

_PROTOCOL_ALIASES = {
    "xsub": "cross_subject",
    "cs": "cross_subject",
    "xview": "cross_view",
    "cv": "cross_view",
    "cv1": "cross_view_1",
    "cv2": "cross_view_2",
}

# --------------------------------------------------------------------------- UCF-101

_UCF_NAME = re.compile(r"v_.+_g(?P<group>\d+)_c(?P<clip>\d+)$")


def load_ucf101(root, split: int = 1, video_dir=None):
    """UCF-101 (Soomro et al. 2012): `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip`
    extracted into `root`, i.e. `root/UCF-101/<Class>/v_<Class>_gGG_cCC.avi` (or the class folders
    directly in `root`) and `root/ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}`.

    Labels follow `classInd.txt` (its 1-based ids minus one). Metadata: `group` (gGG: clips of one
    group share actor and scene, which is why the official splits never cut a group) and `clip`.
    `video_dir` overrides where the class folders are.
    """
    root = _folder(root, "UCF-101")
    lists = root / "ucfTrainTestlist"
    _check_split_number(split)
    fix = "extract UCF101TrainTestSplits-RecognitionTask.zip into the dataset folder"
    index_file = _required(lists / "classInd.txt", "UCF-101", fix)
    class_ids = {}
    for line in _lines(index_file):
        number, name = line.split(maxsplit=1)
        class_ids[name] = int(number) - 1
    if sorted(class_ids.values()) != list(range(len(class_ids))):
        raise ValueError(f"{index_file}: class ids must run 1..{len(class_ids)} without gaps")
    names = sorted(class_ids, key=class_ids.get)
    videos = Path(video_dir) if video_dir else _first_dir(root / "UCF-101", root)

    splits = {}
    for split_name, list_name in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        rows = []
        for line in _lines(_required(lists / list_name, "UCF-101", fix)):
            relative = line.split()[0]  # trainlists add a 1-based label; the class folder says the same
            class_name = relative.split("/")[0]
            if class_name not in class_ids:
                raise ValueError(f"{lists / list_name}: class {class_name!r} of {relative} is not in classInd.txt")
            match = _UCF_NAME.match(Path(relative).stem)
            rows.append(
                {
                    "video": videos / relative,
                    "label": class_ids[class_name],
                    "group": int(match["group"]) if match else None,
                    "clip": int(match["clip"]) if match else None,
                }
            )
        splits[split_name] = rows
    return _dataset_dict(splits, names, {"group": "int32", "clip": "int32"}, f"UCF-101 split {split}")


# --------------------------------------------------------------------------- HMDB-51

_HMDB_SPLIT_FILE = re.compile(r"(?P<class_name>.+)_test_split(?P<split>[123])\.txt$")
_HMDB_TAGS = re.compile(
    r"_(?P<body>[hulf])_(?P<motion>cm|nm)_np(?P<people>\d+)_(?P<view>fr|ba|le|ri)_(?P<quality>bad|med|goo)_\d+$"
)
_HMDB_WORDS = {
    "h": "head",
    "u": "upper body",
    "l": "lower body",
    "f": "full body",
    "fr": "front",
    "ba": "back",
    "le": "left",
    "ri": "right",
    "bad": "bad",
    "med": "medium",
    "goo": "good",
}


def load_hmdb51(root, split: int = 1, video_dir=None):
    """HMDB-51 (Kuehne et al. 2011): `hmdb51_org.rar` (one rar per class) and `test_train_splits.rar`
    extracted into `root`, i.e. `root/hmdb51_org/<class>/<name>.avi` (or the class folders directly in
    `root`) and `root/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`.

    In a split file, id 1 marks a training clip, 2 a test clip, 0 a clip left out. Labels are the
    class names in alphabetical order (51 of them in the full dataset). Metadata from the official
    name tags: `visible_body`, `camera_motion`, `annotated_people` (the npN tag; `num_people` is the
    anonymizer's own column), `viewpoint`, `quality`.
    """
    root = _folder(root, "HMDB-51")
    _check_split_number(split)
    lists = _required(
        root / "testTrainMulti_7030_splits", "HMDB-51", "extract test_train_splits.rar into the dataset folder"
    )
    split_files = {}
    for path in lists.iterdir():
        match = _HMDB_SPLIT_FILE.match(path.name)
        if match and int(match["split"]) == split:
            split_files[match["class_name"]] = path
    if not split_files:
        raise FileNotFoundError(f"HMDB-51 layout: no <class>_test_split{split}.txt files in {lists}")
    names = sorted(split_files)
    videos = Path(video_dir) if video_dir else _first_dir(root / "hmdb51_org", root)

    splits = {"train": [], "test": []}
    for label, class_name in enumerate(names):
        for line in _lines(split_files[class_name]):
            file_name, use = line.split()
            if use == "0":
                continue
            tags = _HMDB_TAGS.search(Path(file_name).stem)
            splits["train" if use == "1" else "test"].append(
                {
                    "video": videos / class_name / file_name,
                    "label": label,
                    "visible_body": _HMDB_WORDS[tags["body"]] if tags else None,
                    "camera_motion": tags["motion"] == "cm" if tags else None,
                    "annotated_people": int(tags["people"]) if tags else None,
                    "viewpoint": _HMDB_WORDS[tags["view"]] if tags else None,
                    "quality": _HMDB_WORDS[tags["quality"]] if tags else None,
                }
            )
    metadata = {
        "visible_body": "string",
        "camera_motion": "bool",
        "annotated_people": "int32",
        "viewpoint": "string",
        "quality": "string",
    }
    return _dataset_dict(splits, names, metadata, f"HMDB-51 split {split}")


# --------------------------------------------------------------------------- NTU RGB+D 60

_NTU_NAME = re.compile(
    r"S(?P<setup>\d{3})C(?P<camera>\d{3})P(?P<subject>\d{3})R(?P<replication>\d{3})A(?P<action>\d{3})_rgb\.avi$"
)


def load_ntu_rgbd60(root, protocol: str = "cross_subject"):
    """NTU RGB+D 60 (Shahroudy et al. 2016): the RGB archives extracted anywhere under `root`
    (`root/nturgb+d_rgb/S001C001P001R001A001_rgb.avi`, ...).

    `protocol`: `cross_subject` (20 training subjects, `NTU60_CROSS_SUBJECT_TRAIN`) or `cross_view`
    (train on cameras 2 and 3, test on camera 1). Label = action id - 1. Metadata: `setup`, `camera`,
    `subject`, `replication`. NTU RGB+D 120 clips (setups 18-32, actions 61-120) are skipped.
    """
    root = _folder(root, "NTU RGB+D")
    protocol = _protocol(protocol, ("cross_subject", "cross_view"))
    splits, skipped = {"train": [], "test": []}, 0
    for path in root.rglob("*_rgb.avi"):
        match = _NTU_NAME.fullmatch(path.name)
        if not match:
            continue
        ids = {key: int(value) for key, value in match.groupdict().items()}
        if ids["setup"] > 17 or ids["action"] > 60:
            skipped += 1
            continue
        in_train = (
            ids["subject"] in NTU60_CROSS_SUBJECT_TRAIN
            if protocol == "cross_subject"
            else ids["camera"] in NTU60_CROSS_VIEW_TRAIN
        )
        splits["train" if in_train else "test"].append({"video": path, "label": ids.pop("action") - 1, **ids})
    if skipped:
        logger.warning("NTU RGB+D 60: skipped %d NTU RGB+D 120 clips (setup > 17 or action > 60)", skipped)
    if not any(splits.values()):
        raise FileNotFoundError(
            f"NTU RGB+D layout: no SsssCcccPpppRrrrAaaa_rgb.avi files under {root}; "
            "extract the nturgbd_rgb archives there"
        )
    metadata = {"setup": "int32", "camera": "int32", "subject": "int32", "replication": "int32"}
    return _dataset_dict(splits, NTU60_CLASSES, metadata, f"NTU RGB+D 60 {protocol}")


# --------------------------------------------------------------------------- Toyota Smarthome

_SMARTHOME_NAME = re.compile(
    r"(?P<action>[A-Za-z.]+)_p(?P<subject>\d+)_r(?P<take>\d+)_v(?P<view>\d+)_c(?P<camera>\d+)\.mp4$"
)


def load_toyota_smarthome(root, protocol: str = "cross_subject"):
    """Toyota Smarthome trimmed clips (Das et al. 2019): `root/mp4/<Action>_pNN_rNN_vNN_cNN.mp4`
    (or the clips anywhere under `root`), e.g. `Cook.Cut_p03_r00_v02_c03.mp4`.

    `protocol`: `cross_subject` (31 classes; 11 training subjects, 7 test subjects),
    `cross_view_1` (train camera 1, validation 5, test 2) or `cross_view_2` (train cameras 1, 3, 4,
    6, 7); the cross-view protocols use their 19 classes and drop the other clips. Metadata:
    `subject` (pNN), `take` (rNN), `view` (vNN), `camera` (cNN).
    """
    root = _folder(root, "Toyota Smarthome")
    protocol = _protocol(protocol, ("cross_subject", "cross_view_1", "cross_view_2"))
    names = SMARTHOME_CLASSES if protocol == "cross_subject" else SMARTHOME_CROSS_VIEW_CLASSES
    class_ids = {name: index for index, name in enumerate(names)}
    cameras = SMARTHOME_CROSS_VIEW_CAMERAS.get(protocol)
    splits = {"train": [], "test": []} if cameras is None else {split: [] for split in cameras}
    found = 0
    for path in _first_dir(root / "mp4", root).rglob("*.mp4"):
        match = _SMARTHOME_NAME.fullmatch(path.name)
        if not match:
            continue
        found += 1
        action = match["action"]
        if action not in SMARTHOME_CLASSES:
            raise ValueError(
                f"Toyota Smarthome layout: {path.name} names an unknown action {action!r}; "
                f"expected one of the 31 classes {SMARTHOME_CLASSES}"
            )
        ids = {key: int(match[key]) for key in ("subject", "take", "view", "camera")}
        if cameras is None:
            split = "train" if ids["subject"] in SMARTHOME_CROSS_SUBJECT_TRAIN else "test"
        else:
            split = next((name for name, chosen in cameras.items() if ids["camera"] in chosen), None)
            if split is None or action not in class_ids:
                continue  # not part of this cross-view protocol
        splits[split].append({"video": path, "label": class_ids[action], **ids})
    if not found:
        raise FileNotFoundError(
            f"Toyota Smarthome layout: no <Action>_pNN_rNN_vNN_cNN.mp4 clips under {root}; "
            "extract the trimmed mp4 archive there"
        )
    metadata = {"subject": "int32", "take": "int32", "view": "int32", "camera": "int32"}
    return _dataset_dict(splits, names, metadata, f"Toyota Smarthome {protocol}")


# --------------------------------------------------------------------------- dispatch

LAYOUTS = {"ucf101": load_ucf101, "hmdb51": load_hmdb51, "ntu60": load_ntu_rgbd60, "smarthome": load_toyota_smarthome}


def load_layout(name: str, root, **options):
    """`load_layout("ucf101", "/data/UCF101", split=2)`: the reader of `LAYOUTS[name]`."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {name!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[name](root, **options)


def detect_layout(root) -> str:
    """Guess a folder's layout from its split files or file names; raise if none fits."""
    root = _folder(root, "dataset")
    if (root / "ucfTrainTestlist").is_dir():
        return "ucf101"
    if (root / "testTrainMulti_7030_splits").is_dir():
        return "hmdb51"
    if any(_NTU_NAME.fullmatch(path.name) for path in root.rglob("*_rgb.avi")):
        return "ntu60"
    if any(_SMARTHOME_NAME.fullmatch(path.name) for path in root.rglob("*.mp4")):
        return "smarthome"
    raise ValueError(
        f"cannot tell the dataset layout of {root}: expected ucfTrainTestlist/ (UCF-101), "
        "testTrainMulti_7030_splits/ (HMDB-51), SsssCcccPpppRrrrAaaa_rgb.avi (NTU RGB+D) or "
        "<Action>_pNN_rNN_vNN_cNN.mp4 (Toyota Smarthome) files; pass the layout explicitly"
    )


# --------------------------------------------------------------------------- helpers


def _folder(root, dataset: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} folder not found: {root}")
    return root


def _first_dir(*candidates: Path) -> Path:
    return next(path for path in candidates if path.is_dir())


def _required(path: Path, dataset: str, fix: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{dataset} layout: {path} not found; {fix}")
    return path


def _lines(path: Path) -> list[str]:
    # The official lists use Windows line ends and trailing spaces.
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _check_split_number(split: int) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3 (the three official train/test splits); got {split!r}")


def _protocol(protocol: str, choices: tuple[str, ...]) -> str:
    name = _PROTOCOL_ALIASES.get(protocol.lower(), protocol.lower())
    if name not in choices:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {list(choices)}")
    return name


def _dataset_dict(splits: dict[str, list[dict]], class_names, metadata: dict[str, str], what: str):
    """Rows `{"video": Path, "label": int, **metadata}` per split -> DatasetDict with the columns above."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from hf_maskdp.video import video_feature

    features = Features(
        {
            "video": video_feature(),
            "label": ClassLabel(names=list(class_names)),
            "video_id": Value("string"),
            **{key: Value(kind) for key, kind in metadata.items()},
        }
    )
    result = DatasetDict()
    for split, rows in splits.items():
        missing = [row["video"] for row in rows if not row["video"].is_file()]
        if missing:
            raise FileNotFoundError(
                f"{what}: {len(missing)} of the {len(rows)} {split} videos are missing, "
                f"e.g. {missing[0]}; is the archive fully extracted into this folder?"
            )
        if not rows:
            raise ValueError(
                f"{what}: the {split} split is empty; the folder holds no clip of this split "
                "(is the download complete?)"
            )
        rows = sorted(rows, key=lambda row: row["video"].name)
        for row in rows:
            row["video_id"] = row["video"].stem
            row["video"] = {"path": str(row["video"].resolve()), "bytes": None}
        result[split] = Dataset.from_list(rows, features=features)
    return result
