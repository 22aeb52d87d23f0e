"""Dataset adapters: raw video datasets (annotation files + video folders) -> labelled items.

Each adapter reads the dataset's own annotation files, in the formats the datasets ship, and
returns `(classes, items)`: the class names (the list index is the action index written to the
shards) and, per split, the videos sorted by key. Videos listed in the annotations but absent on
disk get `path=None`: Kinetics in particular loses YouTube videos over time, and prep must count
and report them, never stop on them.

The video folders are indexed once with an `os.scandir` walk (one directory listing per folder,
not one `stat` per item): Kinetics-400 has 300K files, often on network storage.

Keys are what the shards use as sample keys (`shards.format.KEY_RE`: 1-120 characters of
`[A-Za-z0-9_-]`, no dots, unique in the split). Ids that do not fit are sanitised
deterministically by `make_keys`.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shards.format import KEY_RE

RAW_VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi")  # preference order when one stem has several files
MAX_KEY = 120


class DatasetError(ValueError):
    """Annotations missing or inconsistent, or an unknown dataset; the message says what to do."""


@dataclass(frozen=True)
class VideoItem:
    """One video of a split, as the annotations list it."""

    key: str            # sample key in the shards (KEY_RE), unique in the split
    path: Path | None   # the video file; None when listed but absent on disk (reported, not fatal)
    label: int          # index into the adapter's class list
    label_name: str
    split: str
    source_id: str      # the dataset's own id (YouTube id, list entry, file name, vid_name)
    masks: Path | None = None  # a folder of human segmentation masks, one per frame (HAT): boxes come from them


Items = dict[str, list[VideoItem]]


# ---------------------------------------------------------------------------------------------
# keys and files

def make_keys(ids: Iterable[str]) -> dict[str, str]:
    """Map dataset ids to unique shard keys, deterministically and independent of order.

    An id that already is a valid key is kept as it is. Any other id has each character outside
    `[A-Za-z0-9_-]` replaced by '-', is cut to fit, and gets a suffix `-<8 hex digits of
    sha1(id)>`, so two ids that sanitise alike ("a.b", "a b") still get distinct keys and a key
    never depends on which other ids are present.
    """
    keys: dict[str, str] = {}
    for raw in ids:
        if KEY_RE.match(raw):
            keys[raw] = raw
        else:
            clean = re.sub(r"[^A-Za-z0-9_\-]", "-", raw)
            digest = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
            keys[raw] = f"{clean[:MAX_KEY - 9]}-{digest}"
    seen: dict[str, str] = {}
    for raw, key in keys.items():
        if key in seen:  # a valid id equal to another id's sanitised form: vanishingly rare
            raise DatasetError(f"ids {seen[key]!r} and {raw!r} both map to key {key!r}")
        seen[key] = raw
    return keys


def index_videos(root: Path, max_depth: int) -> dict[str, list[Path]]:
    """File stem -> video paths under `root` (down to `max_depth` folder levels), sorted.

    Paths are ordered by extension preference (RAW_VIDEO_SUFFIXES) and then by path, so a lookup that
    takes the first one is deterministic. A missing `root` gives an empty index: all videos are
    then reported missing by prep.
    """
    found: dict[str, list[Path]] = {}
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir():
                if depth < max_depth:
                    pending.append((Path(entry.path), depth + 1))
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in RAW_VIDEO_SUFFIXES:
                found.setdefault(stem, []).append(Path(entry.path))
    for paths in found.values():
        paths.sort(key=lambda p: (RAW_VIDEO_SUFFIXES.index(p.suffix.lower()), str(p)))
    return found


def _pick(paths: list[Path] | None, folder: str | None = None) -> Path | None:
    """First candidate, preferring one inside a folder named `folder` (the class folder)."""
    if not paths:
        return None
    if folder is not None:
        for p in paths:
            if p.parent.name == folder:
                return p
    return paths[0]


def _find(dirs: Sequence[Path], names: Sequence[str], what: str, hint: str) -> Path:
    """The first existing `dir/name`; otherwise a one-line DatasetError saying what was expected."""
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    alts = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    where = " or ".join(str(d) for d in dirs)
    raise DatasetError(f"{what} not found: expected {names[0]}{alts} in {where}; {hint}")


def _dirs(root: Path, annotations: str | os.PathLike | None, default: str) -> list[Path]:
    """Folders searched for annotation files: the one given, else ROOT/<default> then ROOT."""
    if annotations is not None:
        return [Path(annotations)]
    return [root / default, root]


def _items(split: str, rows: Iterable[tuple[str, str, Path | None, int, str]], where: object) -> list[VideoItem]:
    """Rows (raw key, source id, path, label, label name) -> items with unique keys, sorted by key.

    A row listed twice with the same label counts once; with different labels it is an error.
    """
    by_raw: dict[str, tuple[str, str, Path | None, int, str]] = {}
    for row in rows:
        prev = by_raw.setdefault(row[0], row)
        if prev[3] != row[3]:
            raise DatasetError(f"{where}: {row[1]!r} is listed twice, as {prev[4]!r} and {row[4]!r}")
    keys = make_keys(by_raw)
    items = [VideoItem(keys[raw], path, label, name, split, sid)
             for raw, (_, sid, path, label, name) in by_raw.items()]
    return sorted(items, key=lambda it: it.key)


def _fold(fold: int | str) -> int:
    if str(fold) not in ("1", "2", "3"):
        raise DatasetError(f"fold must be 1, 2 or 3, not {fold!r}")
    return int(fold)


def _lines(path: Path) -> list[str]:
    """Non-empty stripped lines (the UCF-101 lists have CRLF endings and trailing blanks)."""
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# Kinetics-400 and Mini-Kinetics-200

K400_HINT = ("the CSVs come with Kinetics-400 (github.com/cvdfoundation/kinetics-dataset: "
             "annotations/{train,val,test}.csv); pass annotations=DIR if they are elsewhere")
MINI_HINT = ("get train_ytid_list.txt / val_ytid_list.txt from github.com/s9xie/Mini-Kinetics-200 and "
             "kinetics_200_{train,val}.csv from github.com/jevancc/Mini-Kinetics-200 (build/), or use the "
             "Kinetics-400 CSVs; pass annotations=DIR (or train_csv=/val_csv=) if they are elsewhere")
SPLIT_ALIASES = {"val": ("val", "validate", "validation")}


def _kinetics_csv_names(split: str, sizes: Sequence[int]) -> list[str]:
    """File names a Kinetics CSV goes by in the official and common downloads, in lookup order."""
    names = []
    for n in sizes:
        for s in SPLIT_ALIASES.get(split, (split,)):
            names += [f"kinetics_{n}_{s}.csv", f"kinetics-{n}_{s}.csv", f"kinetics{n}_{s}.csv"]
    return names + [f"{s}.csv" for s in SPLIT_ALIASES.get(split, (split,))]


def read_kinetics_csv(path: Path) -> list[dict]:
    """Rows of a Kinetics CSV (`label,youtube_id,time_start,time_end,split[,is_cc]`).

    Returns dicts with `label`, `youtube_id`, `start`, `end` (whole seconds, as in file names).
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: columns {sorted(missing)} missing; expected the Kinetics "
                               "header label,youtube_id,time_start,time_end,split")
        return [{"label": r["label"].strip(), "youtube_id": r["youtube_id"].strip(),
                 "start": int(float(r["time_start"])), "end": int(float(r["time_end"]))}
                for r in reader]


def _kinetics_videos(root: Path, split: str) -> dict[str, list[Path]]:
    """Video files of a split: flat under ROOT/<split>/ or one level deeper (class folders)."""
    index: dict[str, list[Path]] = {}
    for name in SPLIT_ALIASES.get(split, (split,)):
        for stem, paths in index_videos(root / name, max_depth=1).items():
            index.setdefault(stem, []).extend(paths)
    return index


def _kinetics_items(rows: list[dict], root: Path, classes: list[str], split: str, where: Path) -> list[VideoItem]:
    """Kinetics rows -> items: key = conventional file stem, path found by stem (or bare id)."""
    videos = _kinetics_videos(root, split)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for r in rows:
        if r["label"] not in index:
            raise DatasetError(f"{where}: class {r['label']!r} of {r['youtube_id']} is not among the train classes")
        stem = f"{r['youtube_id']}_{r['start']:06d}_{r['end']:06d}"
        path = _pick(videos.get(stem)) or _pick(videos.get(r["youtube_id"]))
        out.append((stem, r["youtube_id"], path, index[r["label"]], r["label"]))
    return _items(split, out, where)


def kinetics400(root: str | os.PathLike, annotations: str | os.PathLike | None = None,
                splits: Sequence[str] = ("train", "val")) -> tuple[list[str], Items]:
    """Kinetics-400 (Kay et al. 2017); splits "train", "val" (and "test" if asked for).

    Annotations: one CSV per split, `label,youtube_id,time_start,time_end,split`, looked up in
    `annotations`, else ROOT/annotations, else ROOT, as `kinetics_400_<split>.csv` (also
    `kinetics-400_`, `kinetics400_`) or `<split>.csv`; "val" is also found as "validate". The
    train CSV is always read, because it defines the classes.
    Videos: `<youtube_id>_<start:06d>_<end:06d>.{mp4,webm,mkv}` (a bare `<youtube_id>.*` is
    accepted too), flat under ROOT/<split>/ or under ROOT/<split>/<class folder>/; the folder
    name is not used, so spaces or underscores in it do not matter.
    Classes: the sorted label names of the train CSV (Kinetics defines no indices).
    Key: `<youtube_id>_<start:06d>_<end:06d>`; source_id: the YouTube id.
    """
    root = Path(root)
    dirs = _dirs(root, annotations, "annotations")
    train_csv = _find(dirs, _kinetics_csv_names("train", (400,)), "Kinetics-400 train CSV", K400_HINT)
    train_rows = read_kinetics_csv(train_csv)
    classes = sorted({r["label"] for r in train_rows})
    items: Items = {}
    for split in splits:
        csv_path = train_csv if split == "train" else _find(
            dirs, _kinetics_csv_names(split, (400,)), f"Kinetics-400 {split} CSV", K400_HINT)
        rows = train_rows if split == "train" else read_kinetics_csv(csv_path)
        items[split] = _kinetics_items(rows, root, classes, split, csv_path)
    return classes, items


def kinetics_mini(root: str | os.PathLike, annotations: str | os.PathLike | None = None,
                  train_csv: str | os.PathLike | None = None,
                  val_csv: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """Mini-Kinetics-200 (Xie et al., ECCV 2018): 200 classes, 80,000 train / 5,000 val videos.

    The official split is two YouTube id lists, `train_ytid_list.txt` and `val_ytid_list.txt`
    (looked up in `annotations`, else ROOT/annotations, else ROOT). Each id is joined with its
    row of a Kinetics CSV: `train_csv` / `val_csv` if given, else `kinetics_200_<split>.csv`,
    else the Kinetics-400 CSV names (see `kinetics400`), in the same folders. An id missing
    from the CSV, or listed there twice, is an error (the join would be a guess).
    Videos, keys and source ids as for Kinetics-400 (ROOT/train, ROOT/val, flat or per class).
    Classes: the sorted label names of the joined train items (200).
    """
    root = Path(root)
    dirs = _dirs(root, annotations, "annotations")
    given = {"train": train_csv, "val": val_csv}
    joined: dict[str, tuple[list[dict], Path]] = {}
    for split in ("train", "val"):
        ids = _lines(_find(dirs, [f"{split}_ytid_list.txt"], f"Mini-Kinetics-200 {split} id list", MINI_HINT))
        if given[split] is not None:
            csv_path = Path(given[split])
            if not csv_path.is_file():
                raise DatasetError(f"Mini-Kinetics-200 {split} CSV not found: {csv_path}; {MINI_HINT}")
        else:
            csv_path = _find(dirs, _kinetics_csv_names(split, (200, 400)), f"Mini-Kinetics-200 {split} CSV", MINI_HINT)
        by_id: dict[str, list[dict]] = {}
        for r in read_kinetics_csv(csv_path):
            by_id.setdefault(r["youtube_id"], []).append(r)
        absent = [i for i in ids if i not in by_id]
        twice = [i for i in ids if len(by_id.get(i, ())) > 1]
        if absent or twice:
            raise DatasetError(f"{csv_path}: {len(absent)} ids of the {split} list are missing "
                               f"(e.g. {absent[:3]}) and {len(twice)} are listed more than once "
                               f"(e.g. {twice[:3]}); use the CSV of the same Kinetics split")
        joined[split] = ([by_id[i][0] for i in ids], csv_path)
    classes = sorted({r["label"] for r in joined["train"][0]})
    items = {split: _kinetics_items(rows, root, classes, split, where) for split, (rows, where) in joined.items()}
    return classes, items


MIMETICS_HINT = ("mimetics_v1.0.csv comes with Mimetics (europe.naverlabs.com/research/computer-vision/mimetics); "
                 "pass annotations=DIR if it is elsewhere")


def mimetics(root: str | os.PathLike, annotations: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """Mimetics (Weinzaepfel & Rogez, IJCV 2021): 713 clips of 50 Kinetics-400 classes mimed
    without their objects or scenes, a test set only; split "test".

    Annotations: `mimetics_v1.0.csv` (Kinetics' columns `label,youtube_id,time_start,time_end`),
    in `annotations`, else ROOT/annotations, else ROOT.
    Videos: `<youtube_id>_<start:06d>_<end:06d>.{mp4,webm,mkv}` (or a bare `<youtube_id>.*`)
    down to 2 folder levels under ROOT (flat, ROOT/test/, class folders).
    Classes: the sorted label names, Kinetics-400's own: evaluate matches them by name to a
    Kinetics model's classes. Key and source_id as for Kinetics-400.
    """
    root = Path(root)
    csv_path = _find(_dirs(root, annotations, "annotations"), ["mimetics_v1.0.csv", "mimetics.csv"],
                     "Mimetics annotation CSV", MIMETICS_HINT)
    rows = read_kinetics_csv(csv_path)
    classes = sorted({r["label"] for r in rows})
    videos = index_videos(root, max_depth=2)
    items = [(stem, r["youtube_id"], _pick(videos.get(stem)) or _pick(videos.get(r["youtube_id"])),
              classes.index(r["label"]), r["label"])
             for r in rows for stem in [f"{r['youtube_id']}_{r['start']:06d}_{r['end']:06d}"]]
    return classes, {"test": _items("test", items, csv_path)}


HAT_HINT = ("the list comes with HAT's downloads (github.com/princetonvisualai/HAT: "
            "data/kinetics400/kinetics400_val_list_rawframes.txt); pass annotations=DIR if it is elsewhere")
HAT_SPLITS = {"test": "ori", "inpainted": "inp"}  # split -> HAT's folder of its frames


def hat(root: str | os.PathLike, annotations: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """HAT (Chung et al., NeurIPS 2022), the released frames and human segmentations of a test set
    (Kinetics-400 val, UCF-101); splits "test" (the original frames, ROOT/ori) and, when ROOT/inp
    exists, "inpainted" (HAT's background-only videos: the humans inpainted away).

    Annotations: MMAction2's rawframes list, lines "<class>/<video> <frames> <label>" (the label
    is the index in the full dataset), found as `kinetics400_val_list_rawframes.txt`, else the one
    `*rawframes*.txt`, in `annotations`, else ROOT/annotations, else ROOT.
    Videos: frame folders ROOT/ori/<class>/<video>/000001.jpg ...; the masks of both splits are
    ROOT/seg/<class>/<video>/000001.png (a human where the value is above 128): prep draws the
    boxes from them (--detector truth). A video without its frames or its masks is missing.
    Classes: the sorted class names of the list, matched by name to a model's classes by evaluate
    (the list's indices are checked to agree with the names). Key: the video folder name;
    source_id: the list entry.
    """
    root = Path(root)
    dirs = _dirs(root, annotations, "annotations")
    lists = [p for d in dirs if d.is_dir() for p in sorted(d.glob("*rawframes*.txt"))]
    named = [p for p in lists if p.name == "kinetics400_val_list_rawframes.txt"]
    if not named and len(lists) > 1:
        raise DatasetError(f"{len(lists)} rawframes lists ({', '.join(p.name for p in lists[:3])}): keep the one "
                           "to prepare in a folder of its own and pass annotations=DIR")
    if not lists:
        _find(dirs, ["kinetics400_val_list_rawframes.txt", "*rawframes*.txt"], "HAT rawframes list", HAT_HINT)  # says what is missing
    list_file = (named or lists)[0]
    entries, label_of = [], {}
    for line in _lines(list_file):
        parts = line.rsplit(" ", 2)  # class names hold spaces ("bending back/05mZDSLkGQI_000007_000017 300 20")
        entry = parts[0].strip("/")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit() or entry.count("/") != 1:
            raise DatasetError(f"{list_file}: expected lines '<class>/<video> <frames> <label>', got {line!r}")
        name = entry.split("/")[0]
        if label_of.setdefault(name, int(parts[2])) != int(parts[2]):
            raise DatasetError(f"{list_file}: class {name!r} has labels {label_of[name]} and {parts[2]}")
        entries.append(entry)
    by_label = {}
    for name, label in label_of.items():
        if by_label.setdefault(label, name) != name:
            raise DatasetError(f"{list_file}: label {label} names both {by_label[label]!r} and {name!r}")
    classes = sorted(label_of)
    folders: dict[Path, set[str]] = {}  # one listing per class folder, not one stat per video

    def present(path: Path) -> bool:
        if path.parent not in folders:
            try:
                folders[path.parent] = {e.name for e in os.scandir(path.parent) if e.is_dir()}
            except (FileNotFoundError, NotADirectoryError):
                folders[path.parent] = set()
        return path.name in folders[path.parent]

    items: Items = {}
    for split, folder in HAT_SPLITS.items():
        if split != "test" and not (root / folder).is_dir():
            continue
        rows = []
        for entry in entries:
            frames, masks = root / folder / entry, root / "seg" / entry
            found = present(frames) and present(masks)
            rows.append((entry.split("/")[1], entry, frames if found else None, classes.index(entry.split("/")[0]),
                         entry.split("/")[0]))
        items[split] = [replace(it, masks=root / "seg" / it.source_id if it.path else None)
                        for it in _items(split, rows, list_file)]
    return classes, items


# ---------------------------------------------------------------------------------------------
# UCF-101, HMDB-51, Diving48

UCF_HINT = ("the lists come in UCF101TrainTestSplits-RecognitionTask.zip from "
            "www.crcv.ucf.edu/data/UCF101.php; pass annotations=DIR if they are elsewhere")
HMDB_HINT = ("the split files come in test_train_splits.rar from serre-lab.clps.brown.edu "
             "(HMDB51 page); pass annotations=DIR if they are elsewhere")
DIVING_HINT = ("the JSON files are on www.svcl.ucsd.edu/projects/resound/dataset.html; "
               "pass annotations=DIR if they are elsewhere")


def ucf101(root: str | os.PathLike, fold: int | str = 1,
           annotations: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """UCF-101 (Soomro et al. 2012), one of the three official folds; splits "train", "test".

    Annotations (in `annotations`, else ROOT/ucfTrainTestlist, else ROOT): `classInd.txt`
    ("1 ApplyEyeMakeup"), `trainlist0<fold>.txt` ("ApplyEyeMakeup/v_..._g08_c01.avi 1") and
    `testlist0<fold>.txt` (no label: it comes from classInd via the folder name).
    Classes: in classInd order, its 1-based indices made 0-based.
    Videos: `v_<Class>_gXX_cYY.avi` anywhere down to 3 folder levels under ROOT (e.g.
    ROOT/UCF-101/<Class>/, ROOT/<Class>/ or flat); one in the listed class folder is preferred.
    Key: the file stem; source_id: the list entry ("<Class>/<file>").
    """
    root, fold = Path(root), _fold(fold)
    dirs = _dirs(root, annotations, "ucfTrainTestlist")
    class_file = _find(dirs, ["classInd.txt"], "UCF-101 classInd.txt", UCF_HINT)
    pairs = [line.split() for line in _lines(class_file)]
    if any(len(p) != 2 or not p[0].isdigit() for p in pairs) or \
            sorted(int(p[0]) for p in pairs) != list(range(1, len(pairs) + 1)):
        raise DatasetError(f"{class_file}: expected lines '<index> <class>' with indices 1..N")
    classes = [name for _, name in sorted((int(i), name) for i, name in pairs)]
    index = {c: i for i, c in enumerate(classes)}
    videos = index_videos(root, max_depth=3)
    items: Items = {}
    for split, list_name in (("train", f"trainlist0{fold}.txt"), ("test", f"testlist0{fold}.txt")):
        list_file = _find([class_file.parent], [list_name], f"UCF-101 {list_name}", UCF_HINT)
        rows = []
        for line in _lines(list_file):
            entry, *rest = line.split()
            folder, _, name = entry.replace("\\", "/").rpartition("/")
            if folder not in index:
                raise DatasetError(f"{list_file}: folder {folder!r} of {entry!r} is not a class of classInd.txt")
            label = index[folder]
            if rest and int(rest[0]) != label + 1:
                raise DatasetError(f"{list_file}: {entry!r} has label {rest[0]}, classInd says {label + 1}")
            stem = os.path.splitext(name)[0]
            rows.append((stem, entry, _pick(videos.get(stem), folder), label, folder))
        items[split] = _items(split, rows, list_file)
    return classes, items


def hmdb51(root: str | os.PathLike, fold: int | str = 1,
           annotations: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """HMDB-51 (Kuehne et al. 2011), one of the three official 70/30 folds; splits "train", "test".

    Annotations (in `annotations`, else ROOT/testTrainMulti_7030_splits, else ROOT): one file
    `<class>_test_split<fold>.txt` per class, lines "<video file name> <flag>" with flag 1 =
    train, 2 = test, 0 = not used in this fold (left out).
    Classes: the sorted class names of the split files (HMDB-51 defines no indices).
    Videos: under ROOT/<class>/ or flat (down to 2 folder levels); one in the class folder is
    preferred. Key: the file stem, sanitised (HMDB names hold characters like '#', '(', '&');
    source_id: the file name.
    """
    root, fold = Path(root), _fold(fold)
    suffix = f"_test_split{fold}.txt"
    split_files: list[Path] = []
    for d in _dirs(root, annotations, "testTrainMulti_7030_splits"):
        if d.is_dir():
            split_files = sorted(p for p in d.iterdir() if p.name.endswith(suffix))
        if split_files:
            break
    if not split_files:
        where = " or ".join(str(d) for d in _dirs(root, annotations, "testTrainMulti_7030_splits"))
        raise DatasetError(f"HMDB-51 split files not found: expected <class>{suffix} in {where}; {HMDB_HINT}")
    classes = sorted(p.name[:-len(suffix)] for p in split_files)
    videos = index_videos(root, max_depth=2)
    rows: dict[str, list] = {"train": [], "test": []}
    for label, cls in enumerate(classes):
        path = split_files[0].parent / f"{cls}{suffix}"
        for line in _lines(path):
            parts = line.split()
            if len(parts) < 2 or parts[-1] not in ("0", "1", "2"):
                raise DatasetError(f"{path}: expected lines '<video file> <0|1|2>', got {line!r}")
            if parts[-1] == "0":
                continue
            name = " ".join(parts[:-1])
            stem = os.path.splitext(name)[0]
            split = "train" if parts[-1] == "1" else "test"
            rows[split].append((stem, name, _pick(videos.get(stem), cls), label, cls))
    return classes, {split: _items(split, r, f"HMDB-51 fold {fold}") for split, r in rows.items()}


def diving48(root: str | os.PathLike, annotations: str | os.PathLike | None = None) -> tuple[list[str], Items]:
    """Diving48 (Li et al., ECCV 2018), the cleaned V2 labels; splits "train", "test".

    Annotations (in `annotations`, else ROOT/annotations, else ROOT): `Diving48_V2_train.json`
    and `Diving48_V2_test.json`, lists of {"vid_name", "label", "start_frame", "end_frame"}; the
    frame range spans the whole trimmed clip of the official rgb videos, so it is not used.
    Classes: from `Diving48_vocab.json` if present (each entry a list of the four dive
    attributes, joined with spaces), else `class_<i>`; the label is the index.
    Videos: `<vid_name>.mp4` down to 2 folder levels under ROOT (e.g. ROOT/rgb/).
    Key: vid_name (sanitised if needed); source_id: vid_name.
    """
    root = Path(root)
    dirs = _dirs(root, annotations, "annotations")
    videos = index_videos(root, max_depth=2)
    raw: dict[str, tuple[list, Path]] = {}
    for split in ("train", "test"):
        path = _find(dirs, [f"Diving48_V2_{split}.json"], f"Diving48 {split} annotations", DIVING_HINT)
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, list) or not all(isinstance(e, dict) and {"vid_name", "label"} <= e.keys()
                                                   for e in entries):
            raise DatasetError(f"{path}: expected a JSON list of objects with vid_name and label")
        raw[split] = (entries, path)
    n = 1 + max(int(e["label"]) for entries, _ in raw.values() for e in entries)
    vocab_path = next((d / "Diving48_vocab.json" for d in dirs if (d / "Diving48_vocab.json").is_file()), None)
    if vocab_path is not None:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        classes = [v if isinstance(v, str) else " ".join(map(str, v)) for v in vocab]
        if len(classes) < n:
            raise DatasetError(f"{vocab_path}: {len(classes)} classes but labels go up to {n - 1}")
    else:
        classes = [f"class_{i}" for i in range(n)]
    items: Items = {}
    for split, (entries, path) in raw.items():
        rows = [(str(e["vid_name"]), str(e["vid_name"]), _pick(videos.get(str(e["vid_name"]))),
                 int(e["label"]), classes[int(e["label"])]) for e in entries]
        items[split] = _items(split, rows, path)
    return classes, items


# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# the synthetic set of prep-synth

def read_synth_world(root: str | os.PathLike) -> dict:
    """RAW/annotations/world.json of a prep-synth folder: its settings, classes, scene names and
    soft scene labels."""
    world_path = Path(root) / "annotations" / "world.json"
    if not world_path.is_file():
        raise DatasetError(f"{world_path} not found: is {root} a prep-synth output folder? "
                           f"(prep-synth --out {root} makes one)")
    world = json.loads(world_path.read_text())
    if "scene_labels" not in world:
        raise DatasetError(f"{world_path} was written by an older prep-synth (no scene labels): run prep-synth again")
    return world


def _synth(root: Path, splits: Sequence[str], class_field: str) -> tuple[list[str], Items]:
    classes = read_synth_world(root)[class_field]
    items: Items = {}
    for split in splits:
        truth = read_synth_truth(root, split)
        rows = [(key, rec["id"], root / rec["file"] if (root / rec["file"]).is_file() else None,
                 classes.index(rec["label"]), rec["label"]) for key, rec in truth.items()]
        if rows:
            items[split] = _items(split, rows, root / "annotations" / f"{split}_truth.jsonl")
    return classes, items


def synth(root: str | os.PathLike) -> tuple[list[str], Items]:
    """The synthetic set of `prep-synth`, splits train, val and test. Classes in the order of
    world.json "actions"; the ground truth (boxes, scene) comes from `read_synth_truth`."""
    return _synth(Path(root), ("train", "val", "test"), "actions")


def synth_novel(root: str | os.PathLike) -> tuple[list[str], Items]:
    """The novel-action transfer target of `prep-synth`, splits novel_train and novel_test;
    classes in the order of world.json "novel_actions"."""
    return _synth(Path(root), ("novel_train", "novel_test"), "novel_actions")


def read_synth_truth(root: str | os.PathLike, split: str) -> dict[str, dict]:
    """key -> prep-synth ground-truth record (id, file, label, scene, per-frame boxes, ...)."""
    path = Path(root) / "annotations" / f"{split}_truth.jsonl"
    return {rec["key"]: rec for rec in map(json.loads, _lines(path))} if path.is_file() else {}


ADAPTERS: dict[str, Callable[..., tuple[list[str], Items]]] = {
    "synth": synth,
    "synth-novel": synth_novel,
    "kinetics-400": kinetics400,
    "kinetics-mini": kinetics_mini,
    "mimetics": mimetics,
    "hat": hat,
    "ucf101": ucf101,
    "hmdb51": hmdb51,
    "diving48": diving48,
}


def load_dataset(name: str, root: str | os.PathLike, **options) -> tuple[list[str], Items]:
    """Dispatch to the adapter `name` (a key of ADAPTERS); options are its keyword arguments.

    Unknown names, unknown options and a missing root are one-line DatasetErrors, so a CLI can
    print them as they are.
    """
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[name]
    allowed = [p for p in inspect.signature(adapter).parameters if p != "root"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(f"dataset {name!r} has no option {', '.join(unknown)}; "
                           f"its options: {', '.join(allowed) or 'none'}")
    if not Path(root).is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    return adapter(root, **options)
