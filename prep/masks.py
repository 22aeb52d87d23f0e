"""Human boxes drawn from segmentation masks (HAT's releases: one PNG per frame, human above 128).

Each connected region of human pixels (8-connected) becomes one box, the smallest one holding
the region's pixels, as normalised coordinates of the mask (shards/FORMAT.md: a box from whole
pixel edges covers exactly those pixels at the mask's size), score 1. Regions smaller than
MIN_REGION of the frame are specks of the segmenter, not people, and are left out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .decode import open_frame

HUMAN_ABOVE = 128     # HAT's own test: seg > 128 is human
MIN_REGION = 0.001    # of the frame's pixels
EIGHT_CONNECTED = np.ones((3, 3), bool)


def mask_boxes(mask: np.ndarray) -> list[list[float]]:
    """(H, W) uint8 mask -> [x1, y1, x2, y2, 1.0] per human region, in raster order of the regions."""
    human = mask > HUMAN_ABOVE
    labels, _ = ndimage.label(human, EIGHT_CONNECTED)
    height, width = human.shape
    areas = np.bincount(labels.ravel())
    return [[cols.start / width, rows.start / height, cols.stop / width, rows.stop / height, 1.0]
            for region, (rows, cols) in enumerate(ndimage.find_objects(labels), 1)
            if areas[region] >= MIN_REGION * height * width]


def boxes_from_masks(masks: Path, numbers: list[int]) -> tuple[list[list[list[float]]], str]:
    """Per frame (given by its number: 000007.png for 7) the boxes of its mask, and a warning
    counting the frames whose mask is missing or damaged (they get no box)."""
    files = {int(p.stem): p for p in masks.glob("*.png") if p.stem.isdigit()}
    drawn: dict[int, list] = {}
    lost = set()
    for n in numbers:
        if n in drawn:
            continue
        try:
            with open_frame(files[n]) as im:
                drawn[n] = mask_boxes(np.asarray(im.convert("L")))
        except (KeyError, OSError, SyntaxError, ValueError):
            drawn[n] = []
            lost.add(n)
    warning = f"{len(lost)} frame(s) without a usable mask in {masks.name} (no box drawn)" if lost else ""
    return [drawn[n] for n in numbers], warning
