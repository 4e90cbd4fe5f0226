"""Dataset folder layouts: tiny folders in each official layout, with real (tiny) video files."""

from pathlib import Path

import numpy as np
import pytest

from hf_maskdp.data.layouts import (
    NTU60_CLASSES,
    SMARTHOME_CLASSES,
    SMARTHOME_CROSS_VIEW_CLASSES,
    detect_layout,
    load_hmdb51,
    load_layout,
    load_ntu_rgbd60,
    load_toyota_smarthome,
    load_ucf101,
)
from hf_maskdp.video import encode_video, load_video_frames


def _frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)


def _write_clips(folder: Path, names: list[str]) -> None:
    """Write a real 3-frame video under each relative name (its frames are `_frames(index)`)."""
    for index, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_video(_frames(index), fps=10, path=path)


def _ids(dataset) -> list[str]:
    return list(dataset["video_id"])


# --------------------------------------------------------------------------- UCF-101

UCF_TRAIN_1 = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g25_c04.avi"]
UCF_TEST_1 = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi", "Archery/v_Archery_g07_c01.avi"]


@pytest.fixture
def ucf_root(tmp_path):
    _write_clips(tmp_path / "UCF-101", UCF_TRAIN_1 + UCF_TEST_1)
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    crlf = "\r\n"  # the official files use Windows line ends
    (lists / "classInd.txt").write_text(crlf.join(["1 ApplyEyeMakeup", "2 Archery", "3 HandstandPushups"]) + crlf)
    labels = {"ApplyEyeMakeup": 1, "Archery": 2, "HandstandPushups": 3}
    (lists / "trainlist01.txt").write_text(crlf.join(f"{p} {labels[p.split('/')[0]]}" for p in UCF_TRAIN_1) + crlf)
    (lists / "testlist01.txt").write_text(crlf.join(UCF_TEST_1) + crlf)
    # split 2 swaps the roles of the same clips
    (lists / "trainlist02.txt").write_text("\n".join(UCF_TEST_1))
    (lists / "testlist02.txt").write_text("\n".join(UCF_TRAIN_1))
    return tmp_path


def test_ucf101_reads_official_lists_labels_and_groups(ucf_root):
    data = load_ucf101(ucf_root)
    assert set(data) == {"train", "test"}
    assert data["train"].features["label"].names == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    train, test = data["train"], data["test"]
    assert _ids(train) == ["v_ApplyEyeMakeup_g08_c01", "v_HandStandPushups_g25_c04"]
    assert train["label"] == [0, 2] and train["group"] == [8, 25] and train["clip"] == [1, 4]
    assert _ids(test) == ["v_ApplyEyeMakeup_g01_c02", "v_Archery_g07_c01"] and test["label"] == [0, 1]
    # the video column holds paths (Video(decode=False)) that decode to the frames written
    video = train[0]["video"]
    assert video["bytes"] is None and Path(video["path"]).is_absolute()
    np.testing.assert_array_equal(load_video_frames(video), _frames(0))
    assert set(train.column_names) == {"video", "label", "video_id", "group", "clip"}

    swapped = load_ucf101(ucf_root, split=2)
    assert _ids(swapped["train"]) == _ids(test) and _ids(swapped["test"]) == _ids(train)


def test_ucf101_bad_layouts_name_what_is_missing(ucf_root):
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        load_ucf101(ucf_root, split=4)
    with pytest.raises(FileNotFoundError, match="trainlist03.txt not found"):
        load_ucf101(ucf_root, split=3)
    (ucf_root / "UCF-101" / UCF_TEST_1[1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 test videos are missing, e\.g\. .*v_Archery_g07_c01\.avi"):
        load_ucf101(ucf_root)
    (ucf_root / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(ValueError, match="class ids must run 1..2 without gaps"):
        load_ucf101(ucf_root)
    (ucf_root / "ucfTrainTestlist" / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match="classInd.txt not found; extract UCF101TrainTestSplits"):
        load_ucf101(ucf_root)
    with pytest.raises(FileNotFoundError, match="UCF-101 folder not found"):
        load_ucf101(ucf_root / "nowhere")


# --------------------------------------------------------------------------- HMDB-51

HMDB_SPLIT_1 = {  # class -> [(file, id)], id 1 = train, 2 = test, 0 = unused
    "brush_hair": [
        ("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1),
        ("Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi", 2),
        ("Brushing_Hair_with_Beth_brush_hair_h_cm_np1_le_bad_1.avi", 0),
    ],
    "wave": [("21_wave_u_nm_np1_fr_goo_0.avi", 1), ("50_FIRST_DATES_wave_f_cm_np1_fr_med_3.avi", 2)],
}


@pytest.fixture
def hmdb_root(tmp_path):
    lists = tmp_path / "testTrainMulti_7030_splits"
    lists.mkdir()
    for class_name, entries in HMDB_SPLIT_1.items():
        _write_clips(tmp_path / "hmdb51_org" / class_name, [name for name, _ in entries])
        # the official files end each line with a space
        (lists / f"{class_name}_test_split1.txt").write_text("".join(f"{name} {use} \n" for name, use in entries))
        (lists / f"{class_name}_test_split2.txt").write_text(
            "".join(f"{name} {3 - use if use else 0} \n" for name, use in entries)
        )
    return tmp_path


def test_hmdb51_reads_split_ids_and_name_tags(hmdb_root):
    data = load_hmdb51(hmdb_root)
    train, test = data["train"], data["test"]
    assert train.features["label"].names == ["brush_hair", "wave"]
    assert _ids(train) == ["21_wave_u_nm_np1_fr_goo_0", "April_09_brush_hair_u_nm_np1_ba_goo_0"]
    assert train["label"] == [1, 0]
    assert test["label"] == [1, 0] and len(test) == 2  # the id-0 clip is in neither split
    row = test[1]
    assert row["video_id"] == "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0"
    assert (row["visible_body"], row["camera_motion"], row["annotated_people"], row["viewpoint"], row["quality"]) == (
        "full body",
        False,
        2,
        "right",
        "medium",
    )
    assert test[0]["camera_motion"] is True
    np.testing.assert_array_equal(load_video_frames(train[1]["video"]), _frames(0))

    swapped = load_hmdb51(hmdb_root, split=2)
    assert sorted(_ids(swapped["train"])) == sorted(_ids(test))


def test_hmdb51_bad_layouts_name_what_is_missing(hmdb_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no <class>_test_split3.txt files"):
        load_hmdb51(hmdb_root, split=3)
    (hmdb_root / "hmdb51_org" / "wave" / "21_wave_u_nm_np1_fr_goo_0.avi").unlink()
    with pytest.raises(FileNotFoundError, match="train videos are missing, e.g. .*21_wave"):
        load_hmdb51(hmdb_root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="testTrainMulti_7030_splits not found; extract test_train_splits.rar"):
        load_hmdb51(empty)


# --------------------------------------------------------------------------- NTU RGB+D 60

NTU_FILES = [
    "S001C001P001R001A001_rgb.avi",  # subject 1 (cross-subject train), camera 1 (cross-view test)
    "S001C002P001R002A043_rgb.avi",  # subject 1, camera 2
    "S002C003P003R001A060_rgb.avi",  # subject 3 (test), camera 3
    "S003C001P003R002A010_rgb.avi",  # subject 3, camera 1
    "S018C001P008R001A061_rgb.avi",  # NTU RGB+D 120 only: skipped
]


@pytest.fixture
def ntu_root(tmp_path):
    _write_clips(tmp_path / "nturgb+d_rgb", NTU_FILES)
    return tmp_path


def test_ntu60_cross_subject_and_cross_view(ntu_root):
    data = load_ntu_rgbd60(ntu_root)
    train, test = data["train"], data["test"]
    assert train.features["label"].names == list(NTU60_CLASSES) and len(NTU60_CLASSES) == 60
    assert _ids(train) == ["S001C001P001R001A001_rgb", "S001C002P001R002A043_rgb"]
    assert train["label"] == [0, 42] and train.features["label"].int2str(42) == "falling"
    assert train["subject"] == [1, 1] and train["camera"] == [1, 2] and train["replication"] == [1, 2]
    assert test["subject"] == [3, 3] and test["label"] == [59, 9] and test["setup"] == [2, 3]

    view = load_ntu_rgbd60(ntu_root, protocol="xview")
    assert view["train"]["camera"] == [2, 3] and view["test"]["camera"] == [1, 1]


def test_ntu60_bad_layouts(ntu_root, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown protocol 'cross_setup'; choose one of \['cross_subject', 'cross_view'\]"
    ):
        load_ntu_rgbd60(ntu_root, protocol="cross_setup")
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError, match="no SsssCcccPpppRrrrAaaa_rgb.avi files"):
        load_ntu_rgbd60(tmp_path / "other")
    for name in NTU_FILES[2:4]:
        (ntu_root / "nturgb+d_rgb" / name).unlink()
    with pytest.raises(ValueError, match="cross_subject: the test split is empty"):
        load_ntu_rgbd60(ntu_root)


# --------------------------------------------------------------------------- Toyota Smarthome

SMARTHOME_FILES = [
    "Cook.Cut_p03_r00_v02_c01.mp4",  # subject 3: cross-subject train; a cross-subject-only class
    "Walk_p02_r01_v15_c02.mp4",  # subject 2: test; camera 2: cross-view test
    "Readbook_p25_r02_v01_c05.mp4",  # camera 5: cross-view validation
    "Drink.Fromcup_p10_r00_v01_c01.mp4",  # camera 1: cross-view train
    "Usetablet_p04_r00_v03_c04.mp4",  # camera 4: train in cross_view_2 only
]


@pytest.fixture
def smarthome_root(tmp_path):
    _write_clips(tmp_path / "mp4", SMARTHOME_FILES)
    (tmp_path / "mp4" / "README.txt").write_text("not a clip")
    return tmp_path


def test_smarthome_cross_subject(smarthome_root):
    data = load_toyota_smarthome(smarthome_root)
    train, test = data["train"], data["test"]
    assert train.features["label"].names == list(SMARTHOME_CLASSES) and len(SMARTHOME_CLASSES) == 31
    assert _ids(train) == ["Cook.Cut_p03_r00_v02_c01", "Readbook_p25_r02_v01_c05", "Usetablet_p04_r00_v03_c04"]
    assert [train.features["label"].int2str(i) for i in train["label"]] == ["Cook.Cut", "Readbook", "Usetablet"]
    assert train["subject"] == [3, 25, 4] and train["take"] == [0, 2, 0] and train["view"] == [2, 1, 3]
    assert _ids(test) == ["Drink.Fromcup_p10_r00_v01_c01", "Walk_p02_r01_v15_c02"] and test["camera"] == [1, 2]


def test_smarthome_cross_view_protocols(smarthome_root):
    view1 = load_toyota_smarthome(smarthome_root, protocol="CV1")
    assert set(view1) == {"train", "validation", "test"}
    assert view1["train"].features["label"].names == list(SMARTHOME_CROSS_VIEW_CLASSES)
    assert _ids(view1["train"]) == ["Drink.Fromcup_p10_r00_v01_c01"]  # Cook.Cut is not a cross-view class
    assert _ids(view1["validation"]) == ["Readbook_p25_r02_v01_c05"]
    assert _ids(view1["test"]) == ["Walk_p02_r01_v15_c02"]
    assert view1["test"]["label"] == [SMARTHOME_CROSS_VIEW_CLASSES.index("Walk")]
    view2 = load_toyota_smarthome(smarthome_root, protocol="cross_view_2")
    assert _ids(view2["train"]) == ["Drink.Fromcup_p10_r00_v01_c01", "Usetablet_p04_r00_v03_c04"]


def test_smarthome_bad_layouts(smarthome_root, tmp_path):
    _write_clips(smarthome_root / "mp4", ["Dance_p03_r00_v01_c01.mp4"])
    with pytest.raises(ValueError, match="Dance_p03_r00_v01_c01.mp4 names an unknown action 'Dance'"):
        load_toyota_smarthome(smarthome_root)
    (tmp_path / "frames").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no <Action>_pNN_rNN_vNN_cNN.mp4 clips"):
        load_toyota_smarthome(tmp_path / "frames")


# --------------------------------------------------------------------------- dispatch


def test_detect_and_load_layout(ucf_root, tmp_path):
    assert detect_layout(ucf_root) == "ucf101"
    assert load_layout("ucf101", ucf_root)["test"].num_rows == 2
    for layout, files in (("ntu60", ["rgb/" + NTU_FILES[0]]), ("smarthome", ["mp4/" + SMARTHOME_FILES[0]])):
        _write_clips(tmp_path / layout, files)
        assert detect_layout(tmp_path / layout) == layout
    (tmp_path / "hmdb" / "testTrainMulti_7030_splits").mkdir(parents=True)
    assert detect_layout(tmp_path / "hmdb") == "hmdb51"
    (tmp_path / "unknown").mkdir()
    with pytest.raises(ValueError, match="cannot tell the dataset layout"):
        detect_layout(tmp_path / "unknown")
    with pytest.raises(
        ValueError,
        match=r"unknown dataset layout 'kinetics'; choose one of \['hmdb51', 'ntu60', 'smarthome', 'ucf101'\]",
    ):
        load_layout("kinetics", ucf_root)
