"""Crafted input, as a hostile or careless user hands it over: nothing runs from a file, every
damage is named in one line, no nonsense value ends in a traceback.

Counted for the record (tests print nothing; the figures are the lengths of the tables below):
crafted checkpoint and weights files x load paths, planted shard defects, CLI nonsense values.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from conftest import CLASSES, edit_manifest, rebuild_shard, write_tiny_set
from shards.check import main as shards_check
from shards.format import VIDEO_EXTS, ShardFormatError
from shards.index import index_from_tar
from shards.loader import build_loader
from shards.loader.preview import main as shards_preview
from shards.reader import iter_samples
from shards.loader import SplitIndex
from shards.files import file_sha256
from train import checkpoint
from train.evaluation.cam import main as cam
from train.demo import main as demo
from train.evaluation.evaluate import main as evaluate
from train.evaluation.export import main as export
from train.evaluation.finetune import main as finetune
from train.pretrain import INTERRUPTED, main as pretrain

ROOT = Path(__file__).resolve().parents[1]


def run_main(main, argv: list[str], capsys) -> tuple[int, list[str], str]:
    """An entry point run as its console script runs it: (exit code, the lines it wrote to stderr,
    its stdout); a SystemExit message is the line Python prints for it. An exception escaping
    main would be a traceback: it fails the test."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    if isinstance(code, str):
        code, lines = 1, [*lines, code]
    return code, lines, captured.out


# ---------------------------------------------------------------------------------------------
# crafted checkpoints: a pickle that would create a marker file when loaded unsafely

class Payload:
    """Unpickling this calls open(marker, "w"): the file appears if and only if code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def dump(obj, path: Path, how: str) -> Path:
    """obj written the three ways torch.load reads: the zip format, torch's legacy format, a bare pickle."""
    if how == "zip":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


def craft(path: Path, marker: Path, how: str) -> Path:
    """A file that looks like our checkpoint (marker, keys) with the payload inside."""
    return dump({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "backbone": {"w": Payload(marker)},
                 "scene_head": {}, "config": {"arch": "r3d18-w16", "input": "rgb"}, "classes": CLASSES, "step": 0},
                path, how)


CRAFTED = ["zip", "legacy", "pickle"]


@pytest.mark.parametrize("how", CRAFTED)
def test_the_payload_is_live(tmp_path, how):
    """The control: loaded the way the old code did (weights_only=False), each crafted file runs."""
    marker = tmp_path / "ran"
    path = craft(tmp_path / "evil.pt", marker, how)
    if how == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def load_paths(shards: Path, evil: Path, out: Path) -> dict:
    """The six ways a checkpoint reaches torch.load: (entry point, argv, where the file goes)."""
    return {
        "pretrain --init": (pretrain, ["--shards", str(shards), "--out", str(out), "--device", "cpu",
                                       "--init", str(evil)]),
        "pretrain resume": (pretrain, ["--shards", str(shards), "--out", str(evil.parent), "--device", "cpu"]),
        "evaluate --checkpoint": (evaluate, ["--checkpoint", str(evil), "--shards", str(shards), "--device", "cpu"]),
        "export --checkpoint": (export, ["--checkpoint", str(evil), "--out", str(out / "x.pth")]),
        "finetune --init": (finetune, ["--init", str(evil), "--shards", str(shards), "--out", str(out)]),
        "cam --checkpoint": (cam, ["--checkpoint", str(evil), "--shards", str(shards), "--out", str(out)]),
    }


PATHS = list(load_paths(Path(), Path("x"), Path()))


@pytest.mark.parametrize("how", CRAFTED)
@pytest.mark.parametrize("path_name", PATHS)
def test_crafted_checkpoint_runs_nothing(tiny_shards, tmp_path, capsys, path_name, how):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    evil = craft(run / "checkpoint.pt", marker, how)  # also where a resumed run looks
    main, argv = load_paths(tiny_shards, evil, tmp_path / "out")[path_name]
    code, lines, _ = run_main(main, argv, capsys)
    assert not marker.exists(), "the payload ran"
    assert code != 0 and len(lines) == 1, lines
    assert str(evil) in lines[0] and "is not a scene-debias checkpoint, or one written by an older version" in lines[0]
    assert "re-run the training that made it (or re-export it)" in lines[0]


def test_crafted_scene_model_runs_nothing(tmp_path):
    """prep's Places365 loader: the same payload in a weights file is refused, in one line that
    offers no option the command line lacks."""
    from prep.scene_model import ModelFileError, load_places365
    for how in CRAFTED:
        marker = tmp_path / f"ran-{how}"
        evil = dump({"state_dict": {"w": Payload(marker)}}, tmp_path / f"places-{how}.pth.tar", how)
        with pytest.raises(ModelFileError) as refused:
            load_places365(evil)
        assert not marker.exists()
        message = str(refused.value)
        assert "\n" not in message and "refused unread" in message and "allow_pickle" not in message


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory) -> dict:
    """A real ultralytics checkpoint of a random yolov8n (a person class), as torch.load gives it."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "yolo.pt"
    model = YOLO("yolov8n.yaml")
    model.model.names = {0: "person", **{i: f"c{i}" for i in range(1, 80)}}
    model.save(path)
    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("how", CRAFTED)
def test_crafted_detector_runs_nothing(tmp_path, capsys, tiny_yolo, how):
    """A YOLO file with the payload beside the model: prep-shards refuses it in one line, unread."""
    from prep.synth.generate import generate

    raw, marker = tmp_path / "raw", tmp_path / "ran"
    generate(raw, {"train": 2}, frames=4, size=32, workers=1, progress=False)
    evil = dump({**tiny_yolo, "train_args": Payload(marker)}, tmp_path / "yolo-evil.pt", how)
    argv = ["--dataset", "synth", "--root", str(raw), "--out", str(tmp_path / "out"), "--detector", str(evil),
            "--workers", "1", "--device", "cpu"]
    code, lines, _ = run_main(prep_main("prep-shards"), argv, capsys)
    assert not marker.exists(), "the payload ran"
    assert code != 0 and len(lines) == 1 and str(evil) in lines[0], lines
    says = "loading it would call io.open" if how == "zip" else "not a checkpoint as torch.save"
    assert says in lines[0], lines
    assert not (tmp_path / "out" / ".prep" / "settings.json").exists()


def test_trusted_detector_is_loaded_with_a_warning(tmp_path, capsys, tiny_yolo):
    from prep.detector import PersonDetector

    path = tmp_path / "clean.pt"
    torch.save(tiny_yolo, path)
    PersonDetector(path, device="cpu")  # a genuine checkpoint passes the check
    assert capsys.readouterr().err == ""
    PersonDetector(path, device="cpu", trust=True)
    assert capsys.readouterr().err.splitlines() == [
        f"prep-shards: warning: --trust-detector: {path} is unpickled unchecked (it can run code)"]


@pytest.mark.parametrize("kind, expected", [
    ("old", "it pickles numpy"),  # a checkpoint of the version before: numpy's RNG state pickled as an ndarray
    ("exported", "no 'scene-debias-checkpoint' marker"),  # export's plain state dict given as a checkpoint
    ("garbage", "refused unread"),  # bytes 0..255: pickle opcodes the safe unpickler refuses
    ("empty", "unreadable"),
])
def test_foreign_files_are_refused_in_one_line(tiny_shards, tmp_path, capsys, kind, expected):
    path = tmp_path / "x.pt"
    if kind == "old":
        torch.save({"backbone": {}, "rng": {"numpy": np.random.get_state()}, "config": {}}, path)
    elif kind == "exported":
        torch.save({"fc.weight": torch.zeros(3, 8)}, path)
    else:
        path.write_bytes(b"" if kind == "empty" else bytes(range(256)) * 4)
    argv = ["--checkpoint", str(path), "--shards", str(tiny_shards), "--device", "cpu"]
    code, lines, _ = run_main(evaluate, argv, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"evaluate: error: {path} is not a scene-debias")
    assert expected in lines[0], lines


# ---------------------------------------------------------------------------------------------
# crafted tars and manifests

def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"x" if kind == tarfile.REGTYPE else None
    info.size = len(data or b"")
    return info, data


UNSAFE = {  # name: (member, what the one line says)
    "../x": (member("../x"), "'../x' is a path out of the folder"),
    "/abs/path": (member("/abs/path"), "'/abs/path' is an absolute path"),
    "x/../../y": (member("x/../../y"), "'x/../../y' is a path out of the folder"),
    "symlink": (member("train_0_9.json", tarfile.SYMTYPE, "/etc/passwd"), "'train_0_9.json' is a symlink"),
    "hard link": (member("train_0_9.cls", tarfile.LNKTYPE, "../../etc/passwd"), "'train_0_9.cls' is a hard link"),
    "directory": (member("train_0_9", tarfile.DIRTYPE), "'train_0_9' is a directory"),
}


def check(shards: Path, capsys) -> tuple[int, list[str]]:
    """shards-check as a user runs it: (exit code, its "error:" lines); no traceback."""
    code, _, out = run_main(shards_check, [str(shards)], capsys)
    return code, [line for line in out.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", list(UNSAFE))
def test_unsafe_member_is_named_and_refused(tiny_shards, capsys, name):
    planted, says = UNSAFE[name]
    rebuild_shard(tiny_shards, "train-000000.tar", extra=[planted], keep_index=True)  # appended: offsets unchanged
    code, errors = check(tiny_shards, capsys)
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: train-000000.tar: member {says}"), errors
    with pytest.raises(ShardFormatError, match=re.escape(f"train-000000.tar: member {says}")):
        list(iter_samples(tiny_shards, "train", decode=False))


def test_every_unsafe_member_gets_its_own_line(tiny_shards, capsys):
    rebuild_shard(tiny_shards, "train-000000.tar", extra=[m for m, _ in UNSAFE.values()], keep_index=True)
    code, errors = check(tiny_shards, capsys)
    assert code == 1 and len(errors) == len(UNSAFE), errors
    assert all(says in e for (_, says), e in zip(UNSAFE.values(), errors)), errors


def test_loader_index_refuses_unsafe_names(tiny_shards):
    idx = tiny_shards / "train-000000.idx"
    idx.write_text(idx.read_text().replace(" train_0_1.json", " ../train_0_1.json"))
    with pytest.raises(ShardFormatError, match=re.escape("'../train_0_1.json' is a path out of the folder")):
        SplitIndex(tiny_shards, "train")


@pytest.mark.parametrize("field, value", [("tar", "../outside.tar"), ("tar", "/etc/passwd"),
                                          ("index", "x/../../y.idx")])
def test_manifest_paths_stay_in_the_folder(tiny_shards, capsys, field, value):
    edit_manifest(tiny_shards, lambda m: m["splits"]["train"]["shards"][0].update({field: value}))
    says = f"{field} {value!r} is not a file name beside the manifest"
    code, errors = check(tiny_shards, capsys)
    assert code == 1 and len(errors) == 1 and says in errors[0], errors
    for read in (lambda: list(iter_samples(tiny_shards, "train", decode=False)),
                 lambda: SplitIndex(tiny_shards, "train")):
        with pytest.raises(ShardFormatError, match=re.escape(says)):
            read()


def test_truncated_tar_names_the_shard_and_the_sample(tiny_shards, capsys):
    path = tiny_shards / "train-000000.tar"
    cut = [i for i in index_from_tar(path)[1] if i[0] in VIDEO_EXTS][0]  # inside sample 1's video
    data = path.read_bytes()[: cut[1] + 100]
    path.write_bytes(data)
    with pytest.raises(ShardFormatError, match=r"train-000000.tar: \d+ bytes, the manifest says \d+ bytes \(truncated"):
        list(iter_samples(tiny_shards, "train", decode=False))
    # the manifest rewritten to the cut size too: the reader still names the shard and the sample
    edit_manifest(tiny_shards, lambda m: m["splits"]["train"]["shards"][0].update(bytes=len(data),
                                                                               sha256=file_sha256(path)))
    says = "train-000000.tar: truncated or unreadable tar in or after sample train_0_1"
    with pytest.raises(ShardFormatError, match=says):
        list(iter_samples(tiny_shards, "train", decode=False))
    code, errors = check(tiny_shards, capsys)
    assert code == 1 and any(says in e for e in errors), errors


def replaced_by(data: bytes):
    return lambda _: data


def with_meta(**fields):
    return lambda data: json.dumps({**json.loads(data), **fields}).encode()


MALFORMED = {  # planted defect: (the member or "manifest", its edit, what the one line says)
    "json a list": ("train_0_1.json", replaced_by(b"[1, 2]"),
                    "train_0_1: sample train_0_1: json holds a JSON list, not an object"),
    "json not JSON": ("train_0_1.json", replaced_by(b"{not json"),
                      "train_0_1: sample train_0_1: json is unreadable (JSONDecodeError"),
    "frames a string": ("train_0_1.json", with_meta(frames="8"),
                        "train_0_1: metadata frames is '8' (str), not a whole number >= 1"),
    "fps negative": ("train_0_1.json", with_meta(fps=-25.0),
                     "train_0_1: metadata fps is -25.0 (float), not a positive number"),
    "msgpack frames ints": ("train_0_1.boxes.msgpack", replaced_by(msgpack.packb(list(range(8)))),
                            "train_0_1: frame 0: 0 (int) is not a list of boxes"),
    "msgpack a string": ("train_0_1.boxes.msgpack", replaced_by(msgpack.packb("boxes")),
                         "train_0_1: boxes.msgpack holds 'boxes' (str), not a list per frame"),
    "msgpack garbage": ("train_0_1.boxes.msgpack", replaced_by(b"\xc1"),
                        "train_0_1: sample train_0_1: boxes.msgpack is unreadable (FormatError)"),
    "box of strings": ("train_0_1.boxes.msgpack", replaced_by(msgpack.packb([[["a", 0, 1, 1, 1]]] + [[]] * 7)),
                       "train_0_1: frame 0: box ['a', 0, 1, 1, 1] is not 5 finite numbers"),
    "cls not a number": ("train_0_1.cls", replaced_by(b"two"),
                         "train_0_1: sample train_0_1: cls is unreadable (ValueError"),
    "scene.f32 cut": ("train_0_1.scene.f32", replaced_by(b"\0" * 7),
                      "train_0_1: sample train_0_1: scene.f32 is unreadable"),
    "boxes.f32 cut": ("train_0_1.boxes.f32", replaced_by(b"\0" * 7),
                      "train_0_1: sample train_0_1: boxes.f32 is unreadable"),
    "shard without sha256": ("manifest", lambda m: m["splits"]["train"]["shards"][0].pop("sha256"),
                             "split 'train': shard 0 lacks 'sha256' or it is not a str"),
    "splits a list": ("manifest", lambda m: m.update(splits=["train"]), "'splits' is not an object of split names"),
    "classes an int": ("manifest", lambda m: m.update(classes=3), "'classes' is not a list of action names"),
    "samples a string": ("manifest", lambda m: m["splits"]["train"].update(samples="5"),
                         "split 'train' is not {samples: a count, shards: a list}"),
}


@pytest.mark.parametrize("defect", list(MALFORMED))
def test_malformed_metadata_is_one_clear_line(tiny_shards, capsys, defect):
    target, edit, says = MALFORMED[defect]
    if target == "manifest":
        edit_manifest(tiny_shards, edit)
    else:
        rebuild_shard(tiny_shards, "train-000000.tar", lambda name, data: edit(data) if name == target else data)
    code, errors = check(tiny_shards, capsys)
    assert code == 1 and len(errors) == 1 and says in errors[0], errors
    if "sample train_0_1: " in says:  # what decoding refuses, the reference reader refuses, naming shard and sample
        with pytest.raises(ShardFormatError, match=r"train-000000.tar: sample train_0_1: "):
            list(iter_samples(tiny_shards, "train", decode=False))


# ---------------------------------------------------------------------------------------------
# nonsense on the command line: exit != 0, one line, no traceback

@functools.cache
def benchmark(name: str):
    """The main() of benchmarks/<name>.py (scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.main


def prep_main(name: str):
    from prep.prep_shards import main as prep_shards
    from prep.synth.generate import main as prep_synth
    return {"prep-shards": prep_shards, "prep-synth": prep_synth}[name]


MAINS = {"pretrain": lambda: pretrain, "evaluate": lambda: evaluate, "finetune": lambda: finetune, "cam": lambda: cam,
         "export": lambda: export, "demo": lambda: demo, "shards-check": lambda: shards_check,
         "prep-shards": functools.partial(prep_main, "prep-shards"), "prep-synth": functools.partial(prep_main, "prep-synth"),
         "shards-preview": lambda: shards_preview, **{f"benchmarks/{b}.py": functools.partial(benchmark, b)
                                                      for b in ("loader", "prep", "train_step", "synth_controls",
                                                                "segments")}}
BASE = {  # the valid part of each command line: S shards, O an output folder, C a checkpoint (r3d18-w16)
    "pretrain": "--shards S --out O --device cpu --loader torch --workers 0 --size 24",
    "evaluate": "--shards S --checkpoint C --device cpu --loader torch",
    "finetune": "--init C --shards S --out O",
    "cam": "--checkpoint C --shards S --out O",
    "export": "--checkpoint C --out O/x.pth",
    "shards-preview": "--shards S --split train",
    "prep-shards": "--dataset synth --root O --out O/shards",
    "prep-synth": "--out O",
}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
NONSENSE = [  # (command, flags added to its base, a fragment of the one line it must print)
    ("pretrain", "--batch-size 0", "argument --batch-size: must be a whole number >= 1, not 0"),
    ("pretrain", "--batch-size -3", "argument --batch-size: must be a whole number >= 1, not -3"),
    ("pretrain", "--batch-size abc", "argument --batch-size: must be a whole number >= 1, not 'abc'"),
    ("pretrain", "--frames 0", "argument --frames"),
    ("pretrain", "--size 0", "argument --size"),
    ("pretrain", "--stride 0", "argument --stride"),
    ("pretrain", "--epochs 0", "argument --epochs"),
    ("pretrain", "--max-steps -1", "argument --max-steps: must be a whole number >= 0, not -1"),
    ("pretrain", "--lr nan", "argument --lr: must be a finite number > 0, not nan"),
    ("pretrain", "--lr -0.001", "argument --lr: must be a finite number > 0, not -0.001"),
    ("pretrain", "--lr 0", "argument --lr"),
    ("pretrain", "--lr inf", "argument --lr"),
    ("pretrain", "--weight-decay -1", "argument --weight-decay: must be a finite number >= 0, not -1"),
    ("pretrain", "--weight-decay nan", "argument --weight-decay"),
    ("pretrain", "--adv-lambda nan", "argument --adv-lambda"),
    ("pretrain", "--ent-weight -1", "argument --ent-weight"),
    ("pretrain", "--mask-threshold nan", "argument --mask-threshold: must be a finite number >= 0 and <= 1, not nan"),
    ("pretrain", "--mask-threshold 1.5", "argument --mask-threshold"),
    ("pretrain", "--workers -1", "argument --workers"),
    ("pretrain", "--threads -2", "argument --threads"),
    ("pretrain", "--seed -1", "argument --seed"),
    ("pretrain", "--log-every 0", "argument --log-every"),
    ("pretrain", "--ckpt-every 0", "argument --ckpt-every"),
    ("pretrain", "--val-every -1", "argument --val-every"),
    ("pretrain", "--lr-patience -1", "argument --lr-patience"),
    ("pretrain", "--warmup-epochs -1", "argument --warmup-epochs"),
    ("pretrain", "--crop centre", "argument --crop: choose from random, corner, not 'centre'"),
    ("pretrain", "--short-videos pad", "argument --short-videos: choose from last, loop, not 'pad'"),
    ("pretrain", "--masked-batches other", "argument --masked-batches: choose from same, separate, not 'other'"),
    ("pretrain", "--masked-batches separate --debias adv", "--masked-batches separate feeds SDN's entropy loss, which this "
                                                           "run does not have (--method sdn --debias adv)"),
    ("pretrain", "--warmup-lr 0", "argument --warmup-lr"),
    ("pretrain", "--recipe official-stage2", "argument --recipe: choose from paper, official, official-stage1, not 'official-stage2'"),
    ("pretrain", "--no-such-flag 1", "unrecognized arguments: --no-such-flag 1"),
    ("pretrain", "--arch foo", "argument --arch: choose from r3d18, r3d18-w32, r3d18-w16, hara-r18, hara-r18-w16, not 'foo'"),
    ("pretrain", "--debias adv,foo", "argument --debias: choose from none, adv, ent, adv,ent, not 'adv,foo'"),
    ("pretrain", "--device tpu", "argument --device: choose from cuda, cpu, not 'tpu'"),
    ("pretrain", "--precision fp8", "argument --precision: choose from auto, fp32, bf16, fp16, not 'fp8'"),
    ("pretrain", "--loader dali --workers 0", "--workers 0: the DALI loader needs at least 1 thread"),
    ("pretrain", "--init missing.pt", "--init missing.pt: no such file"),
    ("pretrain", "--consistency 1", "--consistency applies to --method be, fame or stillmix, not sdn"),
    ("pretrain", "--method be --stillmix-bank x.npz", "--stillmix-bank x.npz: a bank is for --method stillmix, not be"),
    ("pretrain", "--method stillmix --stillmix-bank x.npz", "--stillmix-bank x.npz: no such file"),
    ("pretrain", "--method stillmix --stillmix-bank C", "not a StillMix frame bank"),
    ("pretrain", "--method nope", "argument --method: choose from sdn, be, actorcutmix, fame, stillmix, albar, not 'nope'"),
    ("pretrain", "--size 1000", "smaller than size=1000"),
    ("pretrain", "--batch-size 1000 --max-steps 1", "cannot give each of 1 rank(s) a batch of 1000"),
    ("pretrain", "--shards O/nothing-here", "no manifest.json in"),
    ("pretrain", "--train-split nosuch", "split 'nosuch' is not in the shards"),
    pytest.param("pretrain", "--device cuda", "no CUDA device is visible", marks=NO_CUDA),
    ("evaluate", "--clips 0", "argument --clips"),
    ("evaluate", "--batch-size 0", "argument --batch-size"),
    ("evaluate", "--workers -1", "argument --workers"),
    ("evaluate", "--device tpu", "argument --device: choose from cuda, cpu, not 'tpu'"),
    ("evaluate", "--loader dali --workers 0", "--workers 0: the DALI loader needs at least 1 thread"),
    ("evaluate", "--checkpoint missing.pt", "missing.pt: no such checkpoint file"),
    ("evaluate", "--checkpoint C0", "its weights do not fit the network its config describes"),
    ("evaluate", "--dataset-bias --split nosuch", "split 'nosuch' is not in the shards"),
    ("evaluate", "--dataset-bias --shards O/nothing-here", "no manifest.json in"),
    pytest.param("evaluate", "--device cuda", "no CUDA device is visible", marks=NO_CUDA),
    ("finetune", "--clips 0", "argument --clips"),
    ("finetune", "--lr nan", "argument --lr"),
    ("finetune", "--lr -1", "argument --lr"),
    ("finetune", "--epochs 0", "argument --epochs"),
    ("finetune", "--init missing.pt", "missing.pt: no such checkpoint file"),
    ("finetune", "--batch-size 0", "pretrain: error: argument --batch-size"),  # passed on to pretrain
    ("cam", "--n 0", "argument --n"),
    ("cam", "--scale 0", "argument --scale"),
    ("cam", "--name a --name b", "2 --name for 1 --checkpoint"),
    ("cam", "--checkpoint missing.pt", "missing.pt: no such checkpoint file"),
    ("export", "--checkpoint missing.pt", "missing.pt: no such checkpoint file"),
    ("export", "", "only r3d18 with rgb input has torchvision's r3d_18 layout"),
    ("export", "--checkpoint C64 --out O/no/such/folder/x.pth", "No such file or directory"),
    ("demo", "--seeds 0", "argument --seeds"),
    ("demo", "--bias 1.5", "argument --bias"),
    ("demo", "--bias nan", "argument --bias"),
    ("demo", "--steps 0", "argument --steps"),
    ("demo", "--video-size 15", "argument --video-size: must be a whole number >= 16, not 15"),
    ("demo", "--video-size 65", "--video-size 65 must be even"),
    ("demo", "--size 100", "--size 100 is larger than --video-size 64"),
    ("demo", "--difficulty extreme", "argument --difficulty: choose from easy, medium, hard, not 'extreme'"),
    ("demo", "--lr -1", "argument --lr"),
    ("demo", "--workers 0", "argument --workers"),
    ("demo", "--batch-size 0", "argument --batch-size"),
    ("demo", "--clips 0", "argument --clips"),
    ("shards-check", "O/nothing-here", "is not a directory"),
    ("shards-check", "", "the following arguments are required: shards_dir"),
    ("shards-preview", "--n 0", "argument --n"),
    ("shards-preview", "--frames 0", "argument --frames"),
    ("shards-preview", "--size -1", "argument --size"),
    ("shards-preview", "--show 0", "argument --show"),
    ("shards-preview", "--scale 0", "argument --scale"),
    ("shards-preview", "--device tpu", "argument --device: choose from cpu, cuda, not 'tpu'"),
    ("shards-preview", "--shards O/nothing-here", "no manifest.json in"),
    ("shards-preview", "--split nosuch", "split 'nosuch' is not in the shards"),
    ("shards-preview", "--size 1000", "smaller than size=1000"),
    ("benchmarks/loader.py", "--size 0", "argument --size"),
    ("benchmarks/loader.py", "--size 200", "argument --size: must be a whole number from 1 to 128, not 200"),
    ("benchmarks/loader.py", "--batch 0", "argument --batch"),
    ("benchmarks/loader.py", "--workers 0", "argument --workers"),
    ("benchmarks/loader.py", "--jpeg-quality 101", "argument --jpeg-quality"),
    ("benchmarks/prep.py", "--videos 0", "argument --videos"),
    ("benchmarks/prep.py", "--workers 0", "argument --workers"),
    ("benchmarks/prep.py", "--det-stride 0", "argument --det-stride"),
    ("benchmarks/train_step.py", "--batch -1", "argument --batch"),
    ("benchmarks/train_step.py", "--steps 0", "argument --steps"),
    ("benchmarks/train_step.py", "--video-size 15", "argument --video-size"),
    ("benchmarks/train_step.py", "--size 100", "--video-size 64 must be even and at least --size 100"),
    ("benchmarks/train_step.py", "--arch foo", "argument --arch: choose from r3d18, r3d18-w32, r3d18-w16, hara-r18, hara-r18-w16, not 'foo'"),
    ("benchmarks/synth_controls.py", "--lr nan", "argument --lr"),
    ("benchmarks/synth_controls.py", "--crop 100", "--crop at most --size"),
    ("benchmarks/synth_controls.py", "--steps 0", "argument --steps"),
    ("benchmarks/synth_controls.py", "--size 15", "argument --size"),
    ("prep-shards", "--short-side -5", "argument --short-side: must be a whole number from 0 to 4096, not -5"),
    ("prep-shards", "--short-side 7", "argument --short-side: must be even and at least 16"),
    ("prep-shards", "--fps 1e9", "argument --fps: must be a finite number >= 0 and <= 240, not 1e9"),
    ("prep-shards", "--fps nan", "argument --fps: must be a finite number"),
    ("prep-shards", "--gop 0", "argument --gop: must be a whole number from 1 to 1000, not 0"),
    ("prep-shards", "--det-conf 2", "argument --det-conf"),
    ("prep-shards", "--shard-size 0", "argument --shard-size"),
    ("prep-shards", "--workers 0", "argument --workers"),
    ("prep-shards", "--fold 4", "argument --fold"),
    ("prep-shards", "--scene-frames 0", "argument --scene-frames"),
    ("prep-shards", "--limit -1", "argument --limit"),
    ("prep-synth", "--frames 0", "argument --frames"),
    ("prep-synth", "--train -1", "argument --train"),
    ("prep-synth", "--bias nan", "argument --bias"),
    ("prep-synth", "--size 8", "argument --size"),
    ("prep-synth", "--workers 0", "argument --workers"),
    ("benchmarks/segments.py", "--gops 4,x", "argument --gops: must be a whole number >= 1, not 'x'"),
    ("benchmarks/segments.py", "--size 0", "argument --size"),
]


def fake_checkpoint(path: Path, arch: str = "r3d18-w16", weights: bool = False) -> Path:
    """A well-formed checkpoint of an untrained network (weights=True), or of none at all: enough
    for every check made before the weights load."""
    from train.model import SceneHead, build_backbone
    config = {"arch": arch, "input": "rgb", "frames": 8, "size": 24, "stride": 1, "optimizer": "adamw",
              "freeze_backbone": False, "mask_shape": "box", "mask_threshold": 0.3}
    backbone = build_backbone(arch, len(CLASSES)) if weights else None
    checkpoint.save({"backbone": backbone.state_dict() if weights else {},
                     "scene_head": SceneHead(backbone.feature_dim).state_dict() if weights else {},
                     "config": config, "classes": CLASSES, "step": 0}, path)
    return path


@pytest.fixture(scope="module", autouse=True)
def untrained_checkpoint(tmp_path_factory):
    global WEIGHTS
    WEIGHTS = fake_checkpoint(tmp_path_factory.mktemp("weights") / "w16.pt", weights=True)


@pytest.mark.parametrize("command, flags, says", NONSENSE)
def test_nonsense_value_is_one_line(tiny_shards, tmp_path, capsys, command, flags, says):
    values = {"S": str(tiny_shards), "O": str(tmp_path / "out"), "C": str(WEIGHTS),
              "C0": str(fake_checkpoint(tmp_path / "c0.pt")), "C64": str(fake_checkpoint(tmp_path / "c64.pt", "r3d18"))}
    argv = []
    for word in f"{BASE.get(command, '')} {flags}".split():  # S, O/x.pth, ... -> real paths
        head, slash, rest = word.partition("/")
        argv.append(values[head] + slash + rest if head in values else word)
    code, lines, _ = run_main(MAINS[command](), argv, capsys)
    assert code not in (0, None) and len(lines) == 1, lines
    assert says in lines[0], lines


@pytest.mark.parametrize("script, flags", [("train/pretrain.py", ["--shards", "x", "--out", "y", "--batch-size", "0"]),
                                           ("benchmarks/synth_controls.py", ["--lr", "nan"])])
def test_nonsense_value_from_the_shell(script, flags):
    """The same through a real interpreter: stderr is exactly one line, exit code 2."""
    result = subprocess.run([sys.executable, str(ROOT / script), *flags], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "error: argument" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# the trainer's edges: kill -9, Ctrl-C, a diverging loss, a read-only --out, a checkpoint of other flags

def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--out", str(out), "--device", "cpu", "--loader", "torch", "--workers", "1",
            "--arch", "r3d18-w16", "--frames", "8", "--size", "24", "--batch-size", "2", "--optimizer", "adamw",
            "--log-every", "1", "--val-every", "0", *extra]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def logged_steps(out: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def wait_for_steps(out: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(logged_steps(out)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {n} steps logged: exit code {proc.poll()}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_9_leaves_no_workers_and_resume_logs_each_step_once(tmp_path):
    shards, out = tmp_path / "shards", tmp_path / "run"
    write_tiny_set(shards, {"train": [12, 12]})  # 12 iterations an epoch: no epoch-end checkpoint in the way
    cmd = [sys.executable, str(ROOT / "train" / "pretrain.py"),
           *train_args(shards, out, "--workers", "2", "--ckpt-every", "5", "--max-steps", "200")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_steps(out, proc, 6)  # a checkpoint at step 5, step 6 logged after it
    workers = descendants(proc.pid)
    proc.kill()
    proc.wait()
    assert workers, "the torch loader with 2 workers runs no child process"
    deadline = time.time() + 10
    while time.time() < deadline and any(map(running, workers)):
        time.sleep(0.1)
    assert not [p for p in workers if running(p)], "orphans survived the trainer"
    saved = checkpoint.load(out / "checkpoint.pt")["step"]
    assert saved == 5 and max(logged_steps(out)) > saved  # the duplicate-making situation
    assert pretrain(train_args(shards, out, "--workers", "2", "--ckpt-every", "5", "--max-steps", "8")) == 0
    assert logged_steps(out) == list(range(1, 9))


def test_ctrl_c_writes_a_checkpoint_like_sigterm(tiny_shards, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train" / "pretrain.py"), *train_args(tiny_shards, out, "--max-steps", "200")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    wait_for_steps(out, proc, 1)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the trainer, its forkserver and its workers
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED
    state = checkpoint.load(out / "checkpoint.pt")
    assert 1 <= state["step"] < 200
    assert f"SIGINT: checkpoint written at step {state['step']}; run the same command to resume" in stdout


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_shards, tmp_path, capsys):
    out = tmp_path / "run"
    # a learning rate of 1e12: the step after the first sends the weights to inf
    argv = train_args(tiny_shards, out, "--workers", "0", "--optimizer", "sgd", "--lr", "1e12", "--debias", "none",
                      "--ckpt-every", "1", "--max-steps", "20")
    code, lines, _ = run_main(pretrain, argv, capsys)
    errors = [line for line in lines if "error" in line]
    assert code == 1 and len(errors) == 1, lines
    found = re.search(r"pretrain: error: non-finite loss at step (\d+) \(ce \S+, scene \S+, entropy \S+\) on the batch "
                      r"of (train_\d_\d), (train_\d_\d); stopped without saving: (\S+) \(step (\d+)\) is the last good "
                      r"checkpoint$", errors[0])
    assert found, errors
    state = checkpoint.load(out / "checkpoint.pt")
    assert found.group(4) == str(out / "checkpoint.pt")
    assert int(found.group(5)) == state["step"] == int(found.group(1)) - 1
    assert all(torch.isfinite(v).all() for v in state["backbone"].values() if v.is_floating_point())


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody can write to, root included (chattr +i), or a skip where that is impossible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = ["chmod", "755", str(path)]
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(path)]
    else:
        pytest.skip("cannot make a read-only folder here (root, no chattr)")
    try:
        yield path
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize("where", ["inside", "itself"])
def test_read_only_out_is_one_line(tiny_shards, tmp_path, capsys, where):
    with read_only_folder(tmp_path / "ro") as ro:
        out = ro / "run" if where == "inside" else ro
        code, lines, _ = run_main(pretrain, train_args(tiny_shards, out, "--max-steps", "1"), capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"pretrain: --out {out} is not writable ("), lines


def test_resume_or_init_with_other_flags_is_refused_before_any_data(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    fake_checkpoint(out / "checkpoint.pt", "r3d18-w16")
    argv = train_args(tmp_path / "no-shards-needed", out, "--arch", "r3d18-w32")
    code, lines, _ = run_main(pretrain, argv, capsys)
    assert code == 1 and lines == [f"pretrain: {out / 'checkpoint.pt'} was trained with --arch r3d18-w16, this run has "
                                   "--arch r3d18-w32: run the same command again, or use another --out"]
    init = fake_checkpoint(tmp_path / "stage1.pt", "r3d18")
    code, lines, _ = run_main(pretrain, train_args(tmp_path, tmp_path / "fresh", "--init", str(init)), capsys)
    assert code == 1 and lines == [f"pretrain: {init} was trained with --arch r3d18, this run has --arch r3d18-w16: "
                                   "give this run the same flags"]


# ---------------------------------------------------------------------------------------------
# damaged samples reaching the loader: named with shard and key, or left out and counted

def zero_tail(data: bytes) -> bytes:
    """The second half of a video member zeroed, its size kept (a disk or copy that lost its tail)."""
    return data[:len(data) // 2] + bytes(len(data) - len(data) // 2)


def scene_with(value: float):
    def edit(data: bytes) -> bytes:
        scene = np.frombuffer(data, "<f4").copy()
        scene[3] = value
        return scene.tobytes()
    return edit


def meta_edit(edit):
    def apply(data: bytes) -> bytes:
        meta = json.loads(data)
        return json.dumps(edit(meta)).encode()
    return apply


DAMAGE = [  # (member of train_0_1 to edit, the edit, what the one line says, found at start or reading the clip)
    ("scene.f32", scene_with(float("nan")), "scene label holds NaN or inf", "start"),
    ("scene.f32", scene_with(5.0), "scene label is not a distribution", "start"),
    ("cls", lambda data: b"99", "label 99 outside [0, 3)", "start"),
    ("json", lambda data: b"[1, 2]", "metadata is a list, not an object", "start"),
    ("json", lambda data: data[:-9], "unreadable (", "start"),
    ("json", meta_edit(lambda m: {**m, "frames": "8"}), "metadata frames is '8', not a whole number >= 1", "start"),
    ("json", meta_edit(lambda m: {**m, "segments": [[0, 32], [4, 99999]]}), "metadata segments", "start"),
    ("boxes.f32", lambda data: np.full(6, np.nan, "<f4").tobytes(), "boxes.f32 holds non-finite values", "start"),
    ("vp9.ivf", zero_tail, "are damaged (their records do not follow the segment table", "clip"),
]


def damaged_set(tmp_path: Path, member_ext: str, edit) -> Path:
    shards = tmp_path / "shards"
    write_tiny_set(shards, {"train": [4]}, frames=24, gop=8)
    rebuild_shard(shards, "train-000000.tar", lambda name, data: edit(data) if name == f"train_0_1.{member_ext}" else data)
    return shards


def all_batches(shards: Path, backend: str, **kw) -> tuple[list, object]:
    ld = build_loader(shards, "train", backend=backend, batch_size=2, frames=8, size=24, device="cpu", num_threads=1,
                      train=False, clips=3, **kw)
    return [b["key"] for b in ld], ld


@pytest.mark.parametrize("backend", ["torch", "dali"])
@pytest.mark.parametrize("member_ext, edit, says, when", DAMAGE, ids=[f"{d[0]}-{d[2][:24]}" for d in DAMAGE])
def test_damaged_sample_is_named_or_skipped(tmp_path, backend, member_ext, edit, says, when):
    shards = damaged_set(tmp_path, member_ext, edit)
    with pytest.raises(ShardFormatError) as stopped:
        all_batches(shards, backend)
    message = str(stopped.value)
    assert message.startswith("train-000000.tar: train_0_1: ") and says in message and "\n" not in message, message
    keys, ld = all_batches(shards, backend, skip_bad=True)
    flat = [k for batch in keys for k in batch]
    if when == "start":  # left out of the split: the other three videos, three clips each
        assert ld.index.skipped == [("train-000000.tar: train_0_1", ld.index.skipped[0][1])] and says in ld.index.skipped[0][1]
        assert sorted(flat) == sorted(3 * ["train_0_0", "train_0_2", "train_0_3"])
    else:  # the clips that read the damaged segments are left out of their batches
        assert {w for w, _ in ld.skipped_clips} == {"train-000000.tar: train_0_1"} and flat.count("train_0_1") == 1
        assert len(ld.skipped_clips) == 2 and all(says in why for _, why in ld.skipped_clips)


def test_truncated_shard_is_named(tmp_path):
    shards = tmp_path / "shards"
    write_tiny_set(shards, {"train": [4]})
    tar = shards / "train-000000.tar"
    tar.write_bytes(tar.read_bytes()[:tar.stat().st_size // 2])
    with pytest.raises(ShardFormatError, match=r"^train-000000.tar: train_0_\d: unreadable \(train-000000.tar ends at "
                                               r"byte \d+, inside a member \(a truncated shard"):
        SplitIndex(shards, "train")


def test_pretrain_names_the_damaged_sample_or_skips_it(tmp_path, capsys):
    shards = damaged_set(tmp_path, "scene.f32", scene_with(float("nan")))
    code, lines, _ = run_main(pretrain, train_args(shards, tmp_path / "a", "--max-steps", "2"), capsys)
    assert code == 1 and len(lines) == 1 and "train-000000.tar: train_0_1: scene label holds NaN or inf" in lines[0], lines
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    code, lines, out = run_main(pretrain, train_args(shards, tmp_path / "b", "--max-steps", "2", "--skip-bad-samples"), capsys)
    assert code == 0, lines
    assert ("--skip-bad-samples: 1 damaged sample(s) of train left out; first: train-000000.tar: train_0_1: scene label "
            "holds NaN or inf") in out
    state = checkpoint.load(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["backbone"].values() if v.is_floating_point())
