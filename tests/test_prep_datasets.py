"""Dataset adapters on tiny trees in the real annotation formats, and on the real Mini-Kinetics files."""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import pytest

from prep.datasets import DatasetError, VideoItem, index_videos, load_dataset, make_keys
from shards.format import KEY_RE

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MINI = SHARED / "mini-kinetics-200"
K_HEADER = "label,youtube_id,time_start,time_end,split\n"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def by_key(items: list[VideoItem]) -> dict[str, VideoItem]:
    return {it.key: it for it in items}


# ---------------------------------------------------------------------------------------------

def test_make_keys_sanitises_deterministically():
    long = "y" * 130
    keys = make_keys(["ok_Key-1", "a.b", "a b", long])
    assert keys["ok_Key-1"] == "ok_Key-1"
    assert keys["a.b"] == "a-b-" + hashlib.sha1(b"a.b").hexdigest()[:8]
    assert keys["a b"] == "a-b-" + hashlib.sha1(b"a b").hexdigest()[:8]
    assert keys[long] == "y" * 111 + "-" + hashlib.sha1(long.encode()).hexdigest()[:8]
    assert all(KEY_RE.match(k) for k in keys.values()) and len(set(keys.values())) == 4
    assert make_keys(["a b"]) == {"a b": keys["a b"]}  # independent of the other ids


def test_index_videos_depth_and_preference(tmp_path):
    touch(tmp_path / "a.webm")
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "c1" / "b.mkv")
    touch(tmp_path / "c1" / "deep" / "x.mp4")
    touch(tmp_path / "notes.txt")
    index = index_videos(tmp_path, max_depth=1)
    assert index == {"a": [tmp_path / "a.mp4", tmp_path / "a.webm"], "b": [tmp_path / "c1" / "b.mkv"]}
    assert index_videos(tmp_path / "absent", max_depth=1) == {}


# ---------------------------------------------------------------------------------------------
# Kinetics-400

def kinetics_tree(root: Path, train_csv: str = "annotations/kinetics_400_train.csv",
                  val_csv: str = "annotations/kinetics_400_val.csv") -> None:
    write(root / train_csv, K_HEADER
          + '"passing American football (in game)",abcdefghijk,10,20,train\n'
          + "arm wrestling,kIRmvrmc2nM,20,30,train\n"
          + "arm wrestling,2B65vtRd5Ck,3,13,train\n"
          + "zumba,-7tDxxH2g6I,0,10,train\n")
    write(root / val_csv, K_HEADER
          + "zumba,zkyy5cC7SL4,0,10,val\n"
          + "arm wrestling,s5Fdh_C6rWk,1,11,val\n")
    # train: per-class folders (spaces and underscores), one flat file; -7tDxxH2g6I absent
    touch(root / "train" / "arm_wrestling" / "kIRmvrmc2nM_000020_000030.mp4")
    touch(root / "train" / "passing American football (in game)" / "abcdefghijk_000010_000020.webm")
    touch(root / "train" / "2B65vtRd5Ck_000003_000013.mkv")
    # val: flat
    touch(root / "val" / "zkyy5cC7SL4_000000_000010.mp4")
    touch(root / "val" / "s5Fdh_C6rWk_000001_000011.mp4")


def test_kinetics400_per_class_and_flat(tmp_path):
    kinetics_tree(tmp_path)
    classes, items = load_dataset("kinetics-400", tmp_path)
    assert classes == ["arm wrestling", "passing American football (in game)", "zumba"]
    assert list(items) == ["train", "val"]
    assert [it.key for it in items["train"]] == [
        "-7tDxxH2g6I_000000_000010", "2B65vtRd5Ck_000003_000013",
        "abcdefghijk_000010_000020", "kIRmvrmc2nM_000020_000030"]
    train = by_key(items["train"])
    assert train["-7tDxxH2g6I_000000_000010"] == VideoItem(
        "-7tDxxH2g6I_000000_000010", None, 2, "zumba", "train", "-7tDxxH2g6I")
    assert train["kIRmvrmc2nM_000020_000030"] == VideoItem(
        "kIRmvrmc2nM_000020_000030", tmp_path / "train/arm_wrestling/kIRmvrmc2nM_000020_000030.mp4",
        0, "arm wrestling", "train", "kIRmvrmc2nM")
    assert train["abcdefghijk_000010_000020"].path == \
        tmp_path / "train/passing American football (in game)/abcdefghijk_000010_000020.webm"
    assert train["abcdefghijk_000010_000020"].label == 1
    assert train["2B65vtRd5Ck_000003_000013"].path == tmp_path / "train/2B65vtRd5Ck_000003_000013.mkv"
    assert [(it.key, it.label, it.path) for it in items["val"]] == [
        ("s5Fdh_C6rWk_000001_000011", 0, tmp_path / "val/s5Fdh_C6rWk_000001_000011.mp4"),
        ("zkyy5cC7SL4_000000_000010", 2, tmp_path / "val/zkyy5cC7SL4_000000_000010.mp4")]
    assert {it.split for it in items["val"]} == {"val"}


def test_kinetics400_plain_names_and_annotations_option(tmp_path):
    kinetics_tree(tmp_path, "lists/train.csv", "lists/validate.csv")
    classes, items = load_dataset("kinetics-400", tmp_path, annotations=tmp_path / "lists")
    assert len(classes) == 3 and [len(items[s]) for s in ("train", "val")] == [4, 2]


def test_kinetics400_missing_csv(tmp_path):
    with pytest.raises(DatasetError, match=r"Kinetics-400 train CSV not found: expected kinetics_400_train\.csv "
                                           r".* in .*annotations or .*; .*cvdfoundation"):
        load_dataset("kinetics-400", tmp_path)
    kinetics_tree(tmp_path)
    (tmp_path / "annotations" / "kinetics_400_val.csv").unlink()
    with pytest.raises(DatasetError, match="Kinetics-400 val CSV not found: expected kinetics_400_val.csv"):
        load_dataset("kinetics-400", tmp_path)


def test_kinetics400_unknown_val_class(tmp_path):
    kinetics_tree(tmp_path)
    write(tmp_path / "annotations/kinetics_400_val.csv", K_HEADER + "juggling,zkyy5cC7SL4,0,10,val\n")
    with pytest.raises(DatasetError, match="class 'juggling' of zkyy5cC7SL4 is not among the train classes"):
        load_dataset("kinetics-400", tmp_path)


def test_kinetics400_duplicate_rows(tmp_path):
    kinetics_tree(tmp_path)
    write(tmp_path / "annotations/kinetics_400_val.csv", K_HEADER + "zumba,zkyy5cC7SL4,0,10,val\n" * 2)
    assert len(load_dataset("kinetics-400", tmp_path)[1]["val"]) == 1  # an exact repeat counts once
    write(tmp_path / "annotations/kinetics_400_val.csv",
          K_HEADER + "zumba,zkyy5cC7SL4,0,10,val\narm wrestling,zkyy5cC7SL4,0,10,val\n")
    with pytest.raises(DatasetError, match="'zkyy5cC7SL4' is listed twice, as 'zumba' and 'arm wrestling'"):
        load_dataset("kinetics-400", tmp_path)


# ---------------------------------------------------------------------------------------------
# Mini-Kinetics-200

def test_kinetics_mini_join_with_kinetics400_csvs(tmp_path):
    kinetics_tree(tmp_path)
    write(tmp_path / "annotations/train_ytid_list.txt", "kIRmvrmc2nM\n-7tDxxH2g6I\n")
    write(tmp_path / "annotations/val_ytid_list.txt", "zkyy5cC7SL4\n")
    classes, items = load_dataset("kinetics-mini", tmp_path)
    assert classes == ["arm wrestling", "zumba"]  # from the joined train items only
    assert [(it.key, it.label, it.path) for it in items["train"]] == [
        ("-7tDxxH2g6I_000000_000010", 1, None),
        ("kIRmvrmc2nM_000020_000030", 0, tmp_path / "train/arm_wrestling/kIRmvrmc2nM_000020_000030.mp4")]
    assert [(it.key, it.label) for it in items["val"]] == [("zkyy5cC7SL4_000000_000010", 1)]

    write(tmp_path / "annotations/val_ytid_list.txt", "zkyy5cC7SL4\nnotinthecsv\n")
    with pytest.raises(DatasetError, match=r"1 ids of the val list are missing \(e.g. \['notinthecsv'\]\)"):
        load_dataset("kinetics-mini", tmp_path)


def test_kinetics_mini_missing_lists(tmp_path):
    with pytest.raises(DatasetError, match="Mini-Kinetics-200 train id list not found: expected "
                                           "train_ytid_list.txt .*s9xie/Mini-Kinetics-200"):
        load_dataset("kinetics-mini", tmp_path)
    write(tmp_path / "train_ytid_list.txt", "kIRmvrmc2nM\n")
    write(tmp_path / "val_ytid_list.txt", "zkyy5cC7SL4\n")
    with pytest.raises(DatasetError, match="Mini-Kinetics-200 train CSV not found: expected kinetics_200_train.csv"):
        load_dataset("kinetics-mini", tmp_path)
    write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\nabseiling,kIRmvrmc2nM,0,10,train\n")
    with pytest.raises(DatasetError, match="Mini-Kinetics-200 val CSV not found: .*nope.csv"):
        load_dataset("kinetics-mini", tmp_path, train_csv=tmp_path / "train.csv", val_csv=tmp_path / "nope.csv")


@pytest.mark.skipif(not MINI.is_dir(), reason="reference files ../shared/datasets/mini-kinetics-200 absent")
def test_kinetics_mini_real_files(tmp_path):
    # two videos on disk: one per class folder (train), one flat (val); all others are missing
    touch(tmp_path / "train" / "arm wrestling" / "kIRmvrmc2nM_000020_000030.mp4")
    touch(tmp_path / "val" / "zkyy5cC7SL4_000000_000010.mp4")
    classes, items = load_dataset("kinetics-mini", tmp_path, annotations=MINI)
    assert len(classes) == 200 and classes == sorted(classes)
    assert classes[:4] == ["abseiling", "air drumming", "archery", "arm wrestling"]
    assert len(items["train"]) == 80_000 and len(items["val"]) == 5_000
    for split, per_class in (("train", 400), ("val", 25)):
        counts = collections.Counter(it.label for it in items[split])
        assert sorted(counts) == list(range(200)) and set(counts.values()) == {per_class}
        keys = [it.key for it in items[split]]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert all(KEY_RE.match(k) for k in keys)
        assert all(classes[it.label] == it.label_name and it.split == split for it in items[split])
    train, val = by_key(items["train"]), by_key(items["val"])
    assert train["kIRmvrmc2nM_000020_000030"] == VideoItem(
        "kIRmvrmc2nM_000020_000030", tmp_path / "train/arm wrestling/kIRmvrmc2nM_000020_000030.mp4",
        3, "arm wrestling", "train", "kIRmvrmc2nM")
    assert val["zkyy5cC7SL4_000000_000010"].path == tmp_path / "val/zkyy5cC7SL4_000000_000010.mp4"
    assert val["zkyy5cC7SL4_000000_000010"].label_name == "belly dancing"
    assert sum(it.path is None for it in items["train"]) == 79_999
    assert sum(it.path is None for it in items["val"]) == 4_999


# ---------------------------------------------------------------------------------------------
# UCF-101

def ucf_tree(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    crlf = "\r\n"  # the official lists have Windows line endings
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 HandstandPushups\n", crlf)
    write(lists / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
          "HandstandPushups/v_HandStandPushups_g08_c01.avi 3\n", crlf)
    write(lists / "testlist01.txt", "ApplyLipstick/v_ApplyLipstick_g01_c01.avi\n"
          "HandstandPushups/v_HandStandPushups_g01_c01.avi\n", crlf)
    touch(root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    touch(root / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    touch(root / "v_ApplyLipstick_g01_c01.avi")  # flat


def test_ucf101(tmp_path):
    ucf_tree(tmp_path)
    classes, items = load_dataset("ucf101", tmp_path, fold=1)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "HandstandPushups"]
    assert items["train"] == [
        VideoItem("v_ApplyEyeMakeup_g08_c01", tmp_path / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                  0, "ApplyEyeMakeup", "train", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"),
        VideoItem("v_HandStandPushups_g08_c01", None, 2, "HandstandPushups", "train",
                  "HandstandPushups/v_HandStandPushups_g08_c01.avi")]
    assert [(it.key, it.label, it.path) for it in items["test"]] == [
        ("v_ApplyLipstick_g01_c01", 1, tmp_path / "v_ApplyLipstick_g01_c01.avi"),
        ("v_HandStandPushups_g01_c01", 2, tmp_path / "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi")]


def test_ucf101_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"UCF-101 classInd.txt not found: expected classInd.txt in "
                                           r".*ucfTrainTestlist or .*; .*UCF101TrainTestSplits"):
        load_dataset("ucf101", tmp_path)
    ucf_tree(tmp_path)
    with pytest.raises(DatasetError, match="UCF-101 trainlist02.txt not found"):
        load_dataset("ucf101", tmp_path, fold=2)
    with pytest.raises(DatasetError, match="fold must be 1, 2 or 3"):
        load_dataset("ucf101", tmp_path, fold=4)
    write(tmp_path / "ucfTrainTestlist/trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(DatasetError, match="has label 2, classInd says 1"):
        load_dataset("ucf101", tmp_path)


# ---------------------------------------------------------------------------------------------
# HMDB-51

SPECIAL = "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0"


def test_hmdb51(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    write(splits / "brush_hair_test_split1.txt", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
          "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_1.avi 2 \n"
          "unused_brush_hair_u_nm_np1_ba_goo_2.avi 0 \n")
    write(splits / "cartwheel_test_split1.txt", f"{SPECIAL}.avi 1 \n"
          "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi 2 \n")
    write(splits / "cartwheel_test_split2.txt", f"{SPECIAL}.avi 2 \n")
    touch(tmp_path / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")
    touch(tmp_path / "cartwheel" / f"{SPECIAL}.avi")
    touch(tmp_path / "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi")  # flat
    classes, items = load_dataset("hmdb51", tmp_path)
    assert classes == ["brush_hair", "cartwheel"]
    special_key = "-Rad-Schlag_die_Bank-_cartwheel_f_cm_np1_le_med_0-" + hashlib.sha1(SPECIAL.encode()).hexdigest()[:8]
    assert items["train"] == [
        VideoItem(special_key, tmp_path / "cartwheel" / f"{SPECIAL}.avi", 1, "cartwheel", "train", f"{SPECIAL}.avi"),
        VideoItem("April_09_brush_hair_u_nm_np1_ba_goo_0",
                  tmp_path / "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0, "brush_hair", "train",
                  "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")]
    assert [(it.key, it.label, it.path) for it in items["test"]] == [
        ("Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_1", 0, None),
        ("Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0", 1,
         tmp_path / "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi")]
    assert all(KEY_RE.match(it.key) for s in items.values() for it in s)
    # fold 2 has only the cartwheel file: its classes come from the fold's split files
    classes2, items2 = load_dataset("hmdb51", tmp_path, fold="2")
    assert classes2 == ["cartwheel"] and [it.key for it in items2["test"]] == [special_key]


def test_hmdb51_missing_splits(tmp_path):
    with pytest.raises(DatasetError, match=r"HMDB-51 split files not found: expected <class>_test_split3.txt "
                                           r"in .*testTrainMulti_7030_splits or .*test_train_splits.rar"):
        load_dataset("hmdb51", tmp_path, fold=3)


# ---------------------------------------------------------------------------------------------
# Diving48

def diving_tree(root: Path, vocab: bool) -> None:
    write(root / "Diving48_V2_train.json", json.dumps([
        {"vid_name": "-mmq0PT-u8k_00155", "label": 2, "start_frame": 0, "end_frame": 59},
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 0, "start_frame": 0, "end_frame": 77}]))
    write(root / "Diving48_V2_test.json", json.dumps([
        {"vid_name": "9X1UOHGh-X0_00001", "label": 1, "start_frame": 0, "end_frame": 81}]))
    if vocab:
        write(root / "Diving48_vocab.json", json.dumps([
            ["Back", "15som", "05Twis", "FREE"], ["Back", "15som", "15Twis", "FREE"],
            ["Back", "15som", "25Twis", "FREE"]]))
    touch(root / "rgb" / "-mmq0PT-u8k_00155.mp4")
    touch(root / "rgb" / "9X1UOHGh-X0_00001.mp4")


def test_diving48(tmp_path):
    diving_tree(tmp_path, vocab=True)
    classes, items = load_dataset("diving48", tmp_path)
    assert classes == ["Back 15som 05Twis FREE", "Back 15som 15Twis FREE", "Back 15som 25Twis FREE"]
    assert items["train"] == [
        VideoItem("-mmq0PT-u8k_00155", tmp_path / "rgb/-mmq0PT-u8k_00155.mp4", 2, "Back 15som 25Twis FREE",
                  "train", "-mmq0PT-u8k_00155"),
        VideoItem("_8Vy3dlHg2w_00000", None, 0, "Back 15som 05Twis FREE", "train", "_8Vy3dlHg2w_00000")]
    assert [(it.key, it.label, it.path) for it in items["test"]] == [
        ("9X1UOHGh-X0_00001", 1, tmp_path / "rgb/9X1UOHGh-X0_00001.mp4")]


def test_diving48_without_vocab_and_missing(tmp_path):
    diving_tree(tmp_path, vocab=False)
    classes, items = load_dataset("diving48", tmp_path)
    assert classes == ["class_0", "class_1", "class_2"]
    assert items["train"][0].label_name == "class_2"
    (tmp_path / "Diving48_V2_test.json").unlink()
    with pytest.raises(DatasetError, match="Diving48 test annotations not found: expected Diving48_V2_test.json"):
        load_dataset("diving48", tmp_path)


# ---------------------------------------------------------------------------------------------

def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'ucf'; known: synth, synth-novel, kinetics-400, kinetics-mini, "
                                           "mimetics, hat, ucf101, hmdb51, diving48"):
        load_dataset("ucf", tmp_path)
    with pytest.raises(DatasetError, match="dataset 'ucf101' has no option folds; its options: fold, annotations"):
        load_dataset("ucf101", tmp_path, folds=2)
    with pytest.raises(DatasetError, match="dataset root .*absent is not a folder"):
        load_dataset("ucf101", tmp_path / "absent")


def test_hat_list_and_folders(tmp_path):
    root = tmp_path / "hat"
    for folder in ("ori", "seg"):
        for entry in ("bending back/05mZDSLkGQI_000007_000017", "archery/01xStFVYC7U_000011_000021"):
            (root / folder / entry).mkdir(parents=True)
    (root / "seg" / "archery" / "01xStFVYC7U_000011_000021").rmdir()  # frames without masks: missing
    listing = root / "annotations" / "kinetics400_val_list_rawframes.txt"
    listing.parent.mkdir()
    listing.write_text("archery/01xStFVYC7U_000011_000021 150 5\nbending back/05mZDSLkGQI_000007_000017 300 20\n")
    classes, items = load_dataset("hat", root)
    assert classes == ["archery", "bending back"] and list(items) == ["test"]  # no inp/: no inpainted split
    assert items["test"] == [
        VideoItem("01xStFVYC7U_000011_000021", None, 0, "archery", "test", "archery/01xStFVYC7U_000011_000021"),
        VideoItem("05mZDSLkGQI_000007_000017", root / "ori/bending back/05mZDSLkGQI_000007_000017", 1,
                  "bending back", "test", "bending back/05mZDSLkGQI_000007_000017",
                  masks=root / "seg/bending back/05mZDSLkGQI_000007_000017")]

    for text, message in [("archery/a 150\n", "expected lines '<class>/<video> <frames> <label>', got 'archery/a 150'"),
                          ("archery/a 150 5\narchery/b 150 6\n", "class 'archery' has labels 5 and 6"),
                          ("archery/a 150 5\nabseiling/b 150 5\n", "label 5 names both 'archery' and 'abseiling'")]:
        listing.write_text(text)
        with pytest.raises(DatasetError, match=f"{listing}: {message}$"):
            load_dataset("hat", root)
    listing.unlink()
    with pytest.raises(DatasetError, match=r"HAT rawframes list not found: expected kinetics400_val_list_rawframes.txt "
                                           r"\(or \*rawframes\*.txt\) in .*; the list comes with HAT's downloads"):
        load_dataset("hat", root)
    for name in ("ucf101_val_split_1_rawframes.txt", "ucf101_val_split_2_rawframes.txt"):
        (root / name).write_text("archery/a 150 5\n")
    with pytest.raises(DatasetError, match="2 rawframes lists .*: keep the one to prepare in a folder of its own"):
        load_dataset("hat", root)
