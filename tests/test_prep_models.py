"""Scene labeler (Places365 via timm) and person detector (ultralytics YOLO) on tiny random models.

No network: the Places365 checkpoint is a random torchvision ResNet-50 written in the CSAIL
layout, and the YOLO weights a random yolov8n built from its yaml (conftest.py sets
YOLO_OFFLINE and YOLO_CONFIG_DIR before ultralytics is imported).
"""
from __future__ import annotations

import collections
import hashlib
import io
import struct
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
import torchvision.transforms.v2.functional as TF

from prep.detector import DetectorError, PersonDetector, resolve_classes, to_boxes
from prep.scene_model import (
    IMAGENET_MEAN, IMAGENET_STD, NUM_SCENES, ModelFileError, SceneLabeler, load_places365, places365_state_dict,
    preprocess, sample_indices, torch_load_py2)

PY2_PLACEHOLDER = "PY2_STRING_PLACEHOLDER"


def save_py2_style(obj: dict, path: Path, py2_str: bytes) -> None:
    """torch.save in the legacy (non-zip) format, with the string PY2_PLACEHOLDER turned into a
    Python 2 byte string (SHORT_BINSTRING) holding `py2_str`, as a Python 2 pickle has it."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    old = b"X" + struct.pack("<I", len(PY2_PLACEHOLDER)) + PY2_PLACEHOLDER.encode()  # BINUNICODE
    raw = buf.getvalue()
    assert raw.count(old) == 1
    path.write_bytes(raw.replace(old, b"U" + bytes([len(py2_str)]) + py2_str))


# ---------------------------------------------------------------------------------------------
# scene model

def test_torch_load_py2_latin1_fallback(tmp_path):
    path = tmp_path / "py2.pth.tar"
    save_py2_style({"arch": PY2_PLACEHOLDER, "w": torch.arange(6.0).view(2, 3)}, path, b"caf\xe9")
    with pytest.raises(UnicodeDecodeError):
        torch.load(path, weights_only=True)
    loaded = torch_load_py2(path)
    assert loaded["arch"] == "café" and torch.equal(loaded["w"], torch.arange(6.0).view(2, 3))


@pytest.mark.slow
def test_csail_resnet50_loads_into_timm(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(num_classes=NUM_SCENES).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a mix-up of buffers shows
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    # the CSAIL layout, as saved by a PyTorch 0.2 / Python 2 training script: DataParallel
    # prefix, no num_batches_tracked buffers, legacy file format, a Python 2 byte string
    state = collections.OrderedDict(("module." + k, v) for k, v in reference.state_dict().items()
                                    if not k.endswith("num_batches_tracked"))
    path = tmp_path / "resnet50_places365.pth.tar"
    save_py2_style({"epoch": 90, "arch": "resnet50", "note": PY2_PLACEHOLDER, "state_dict": state,
                    "best_prec1": 54.74}, path, b"trained at CSAIL \xb7 2017")
    model = load_places365(path)
    assert isinstance(model, timm.models.ResNet) and not model.training
    # names and shapes coincide with timm's: the key map is just the removal of "module."
    timm_shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert timm_shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert set(places365_state_dict(torch_load_py2(path))) == {
        k for k in timm_shapes if not k.endswith("num_batches_tracked")}
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 60, 3), dtype=np.uint8)
    x = preprocess(torch.from_numpy(frames[sample_indices(5, 2)]))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)

    labeler = SceneLabeler(model, device="cpu", batch_size=4, frames=2)
    label, votes = labeler.labels(frames)
    assert label.shape == (NUM_SCENES,) and label.dtype == np.float32
    assert abs(float(label.sum()) - 1) < 1e-5 and (label >= 0).all()
    np.testing.assert_allclose(label, expected.softmax(1).mean(0).numpy(), atol=1e-6)
    assert votes == expected.argmax(1).tolist()
    info = labeler.describe(path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["weights"] == path.name and info["frames"] == 2 and info["model"] == "resnet50"


def test_load_places365_errors(tmp_path):
    with pytest.raises(ModelFileError, match=r"weights .*absent.pth.tar not found; get resnet50_places365"):
        load_places365(tmp_path / "absent.pth.tar")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"args": Namespace(lr=0.1), "state_dict": {}}, unsafe)
    with pytest.raises(ModelFileError, match=r"cannot read .*unsafe.pth: it pickles argparse.Namespace, so it is "
                                             r"refused unread .*torch.save\(model.state_dict\(\), PATH\)$") as refused:
        load_places365(unsafe)
    assert "\n" not in str(refused.value) and "allow_pickle" not in str(refused.value)  # no option the CLI lacks
    wrong = tmp_path / "resnet18.pth"
    torch.save({"fc.weight": torch.zeros(NUM_SCENES, 512)}, wrong)
    with pytest.raises(ModelFileError, match="does not fit timm 'resnet50' with 365 classes"):
        load_places365(wrong)


def test_sample_indices_evenly_spaced():
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_indices(3, 8).tolist() == [0, 1, 2]  # fewer frames than asked: each once
    assert sample_indices(17, 1).tolist() == [8]
    with pytest.raises(ValueError):
        sample_indices(0, 8)


@pytest.mark.parametrize("shape", [(2, 60, 90, 3), (1, 300, 200, 3)])
def test_preprocess_matches_torchvision(shape):
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8))
    x = frames.permute(0, 3, 1, 2).float() / 255
    x = TF.center_crop(TF.resize(x, [256], antialias=True), [224])
    expected = TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    out = preprocess(frames)
    assert out.shape == (shape[0], 3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def tiny_scene_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, NUM_SCENES))


def test_scene_labeler_batched_equals_single():
    rng = np.random.default_rng(2)
    videos = [rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
              for t, h, w in ((10, 32, 48), (3, 40, 30), (1, 24, 24))]
    model = tiny_scene_model()
    labeler = SceneLabeler(model, device="cpu", batch_size=3, frames=4)  # batches span videos
    batch, batch_votes = labeler.labels_batch(videos)
    assert batch.shape == (3, NUM_SCENES) and batch.dtype == np.float32
    np.testing.assert_allclose(batch.sum(1), 1, atol=1e-5)
    assert [len(v) for v in batch_votes] == [4, 3, 1]  # one vote per sampled frame
    for video, label, votes in zip(videos, batch, batch_votes):
        single, single_votes = labeler.labels(video)
        np.testing.assert_allclose(single, label, atol=1e-6)
        assert single_votes == votes
        with torch.no_grad():
            probs = model(preprocess(torch.from_numpy(video[sample_indices(len(video), 4)]))).softmax(1)
            np.testing.assert_allclose(label, probs.mean(0).numpy(), atol=1e-6)
            assert votes == probs.argmax(1).tolist()
    assert labeler.labels_batch([])[0].shape == (0, NUM_SCENES)
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, 3\)"):
        labeler.labels(videos[0].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# detector

def test_to_boxes_normalises_clips_sorts():
    xyxy = torch.tensor([[16.0, 8.0, 48.0, 40.0],    # person, reaches below the frame
                         [-4.0, 0.0, 72.0, 24.0],    # person, wider than the frame
                         [0.0, 0.0, 8.0, 8.0],       # not a person
                         [32.0, 4.0, 40.0, 12.0]])   # person, same score as the first
    conf = torch.tensor([0.5, 0.75, 0.99, 0.5])
    cls = torch.tensor([0.0, 0.0, 2.0, 0.0])
    assert to_boxes(xyxy, conf, cls, width=64, height=32) == [
        [0.0, 0.0, 1.0, 0.75, 0.75],
        [0.25, 0.25, 0.75, 1.0, 0.5],
        [0.5, 0.125, 0.625, 0.375, 0.5]]
    assert to_boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 64, 32) == []
    assert to_boxes(xyxy, conf, cls, 64, 32, keep_classes=[2]) == [[0.0, 0.0, 0.125, 0.25, 0.9900000095367432]]
    assert len(to_boxes(xyxy, conf, cls, 64, 32, keep_classes=[0, 2])) == 4  # every class asked for


def test_resolve_classes_by_id_or_name():
    coco = {0: "person", 1: "bicycle", 2: "car"}
    assert resolve_classes(coco) == [0] and resolve_classes(coco, "") == [0]
    fall = {0: "Normal", 1: "Fall"}
    assert resolve_classes(fall, "Normal,Fall") == [0, 1] == resolve_classes(fall, "1, 0") == resolve_classes(fall, "fall,0")
    with pytest.raises(DetectorError, match=r"^the detector has no class named 'person'; its classes are "
                                            r"\{0: 'Normal', 1: 'Fall'\}: choose the ones that are people with --det-classes"):
        resolve_classes(fall)
    with pytest.raises(DetectorError, match=r"^--det-classes Sitting: the detector has no such class; its classes are \{0: 'Normal'"):
        resolve_classes(fall, "Normal,Sitting")
    with pytest.raises(DetectorError, match=r"--det-classes 99: .*\{0: '0', .*19: '19', \.\.\. \(80 classes\)\}$"):
        resolve_classes({i: str(i) for i in range(80)}, "99")


@pytest.fixture(scope="module")
def yolo_weights(tmp_path_factory) -> Path:
    """A random yolov8n, built offline from its yaml and saved as a real ultralytics checkpoint."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "tiny-yolov8n.pt"
    model = YOLO("yolov8n.yaml")
    model.model.names = {i: "person" if i == 0 else f"class{i}" for i in range(80)}  # COCO has person at 0
    model.save(path)
    checkpoint = torch.load(path, weights_only=False)
    assert {"model", "version", "date"} <= checkpoint.keys()
    return path


def check_boxes(per_frame: list, frames: int) -> None:
    assert len(per_frame) == frames
    for boxes in per_frame:
        assert all(len(b) == 5 and all(isinstance(v, float) for v in b) for b in boxes)
        assert all(0 <= b[0] <= b[2] <= 1 and 0 <= b[1] <= b[3] <= 1 and 0 <= b[4] <= 1 for b in boxes)
        assert [b[4] for b in boxes] == sorted((b[4] for b in boxes), reverse=True)


def test_person_detector_offline(yolo_weights):
    frames = np.random.default_rng(3).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    # conf=0: a random model then still returns boxes, so the checks below see some
    full = PersonDetector(yolo_weights, device="cpu", conf=0.0, imgsz=64, batch=2)
    every = full.detect(frames)
    check_boxes(every, 5)
    assert sum(map(len, every)) > 0

    strided = PersonDetector(yolo_weights, device="cpu", conf=0.0, imgsz=64, batch=2, stride=3)
    boxes = strided.detect(frames)
    check_boxes(boxes, 5)
    assert boxes[1] == boxes[0] and boxes[2] == boxes[0] and boxes[4] == boxes[3]
    assert boxes[1] is not boxes[0]  # copies: editing one frame's boxes leaves the others alone
    for t in (0, 3):  # detected frames match detection of every frame
        assert np.allclose(np.array(boxes[t]).reshape(-1, 5), np.array(every[t]).reshape(-1, 5), atol=1e-4)
    assert strided.detect(frames[:0]) == []
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, 3\)"):
        strided.detect(frames[0])

    info = strided.describe()
    assert info["sha256"] == hashlib.sha256(yolo_weights.read_bytes()).hexdigest()
    assert info["weights"] == "tiny-yolov8n.pt"
    assert (info["conf"], info["imgsz"], info["stride"], info["classes"], info["class_names"]) == (0.0, 64, 3, [0], ["person"])
    import ultralytics
    assert info["ultralytics"] == ultralytics.__version__
