"""Procedural scene backgrounds for the synthetic set, each named after a Places365 category.

A scene is a family of backgrounds: a layout (bands, stripes, shelves, trunks, ...) with a
jittered palette, random element positions and a little texture noise, so that a small CNN
recognises it from structure and not from a single pixel's colour (greens appear in forest and
soccer field, blues in pool, beach and rink, greys in mall and street).

Scene soft labels (`scene_soft_label`): what a Places365 classifier would say, made from the
ground truth: 0.70 on the true category, 0.25 spread evenly over 2-3 related categories, and
0.05 spread evenly over all 365. The indices are those of categories_places365.txt (checked
against that file by the tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from shards.format import NUM_SCENES

TRUE_MASS, RELATED_MASS, UNIFORM_MASS = 0.70, 0.25, 0.05


@dataclass(frozen=True)
class Scene:
    name: str                          # Places365 category, without the "/x/" prefix
    index: int                         # its index in categories_places365.txt
    related: tuple[tuple[str, int], ...]  # (name, index) of categories that share mass
    draw: Callable[[np.random.Generator, int, int], np.ndarray]  # rng, H, W -> float32 HxWx3


def _jitter(rng, rgb, amount=0.08):
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def _fill(h, w, rgb):
    return np.broadcast_to(np.asarray(rgb, np.float32), (h, w, 3)).copy()


def _vgradient(h, w, top, bottom):
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32), (h, w, 3)).copy()


def _noise(rng, img, amount):
    img += rng.normal(0, amount, img.shape[:2] + (1,)).astype(np.float32)
    return img


def _rect(img, y0, y1, x0, x1, rgb):
    h, w = img.shape[:2]
    img[max(0, int(y0)):min(h, int(y1)), max(0, int(x0)):min(w, int(x1))] = rgb


def _circle(img, cy, cx, r, rgb):
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rgb


def _sky(rng, h, w, horizon):
    return _vgradient(horizon, w, _jitter(rng, (0.45, 0.65, 0.92)), _jitter(rng, (0.75, 0.85, 0.97)))


def pool_outdoor(rng, h, w):
    horizon = int(h * rng.uniform(0.15, 0.3))
    img = _fill(h, w, _jitter(rng, (0.1, 0.55, 0.85)))
    img[:horizon] = _sky(rng, h, w, horizon)
    _rect(img, horizon, horizon + h * 0.04, 0, w, _jitter(rng, (0.92, 0.92, 0.88), 0.04))
    yy, xx = np.mgrid[horizon:h, 0:w].astype(np.float32)
    freq, phase = rng.uniform(0.15, 0.3), rng.uniform(0, 6.3)
    waves = np.sin(xx * freq + yy * 0.9 + phase) > 0.85
    img[horizon:][waves] = _jitter(rng, (0.55, 0.85, 0.98), 0.05)
    for y in np.arange(horizon + h * 0.15, h, h * rng.uniform(0.15, 0.25)):  # lane ropes
        for x in np.arange(0, w, 6):
            _rect(img, y, y + 2, x, x + 3, (0.9, 0.15, 0.15) if (x // 6) % 2 else (0.95, 0.95, 0.95))
    return _noise(rng, img, 0.02)


def pool_indoor(rng, h, w):
    img = pool_outdoor(rng, h, w)
    wall = int(h * rng.uniform(0.25, 0.35))
    img[:wall] = _fill(wall, w, _jitter(rng, (0.75, 0.78, 0.8)))
    step = max(4, int(w / rng.uniform(10, 16)))
    img[:wall, ::step] *= 0.8  # wall tiles
    img[:wall:step, :] *= 0.8
    return img


def basketball_court(rng, h, w):
    floor = int(h * rng.uniform(0.4, 0.55))
    img = _fill(h, w, _jitter(rng, (0.8, 0.55, 0.3)))
    img[:floor] = _fill(floor, w, _jitter(rng, (0.6, 0.6, 0.65)))
    plank = max(3, int(w / rng.uniform(12, 20)))
    img[floor:, ::plank] *= 0.82
    yy, xx = np.mgrid[0:h, 0:w]
    cx, r = w * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.45)
    ring = np.abs(np.hypot((xx - cx) / 1.0, (yy - h) * 1.6) - r) < 1.2
    img[ring & (yy > floor)] = (0.95, 0.95, 0.95)
    bx = w * rng.uniform(0.2, 0.7)
    _rect(img, floor * 0.25, floor * 0.75, bx, bx + w * 0.25, (0.95, 0.95, 0.95))   # backboard
    _rect(img, floor * 0.45, floor * 0.75, bx + w * 0.08, bx + w * 0.17, (0.85, 0.3, 0.1))
    return _noise(rng, img, 0.02)


def forest(rng, h, w):
    img = _vgradient(h, w, _jitter(rng, (0.3, 0.5, 0.25)), _jitter(rng, (0.2, 0.35, 0.12)))
    for _ in range(int(rng.integers(25, 45))):  # leaf blobs
        _circle(img, rng.uniform(0, h * 0.7), rng.uniform(0, w), rng.uniform(3, w * 0.12),
                _jitter(rng, (0.15, 0.42, 0.15), 0.1))
    for _ in range(int(rng.integers(4, 9))):  # trunks
        x, tw = rng.uniform(0, w), rng.uniform(2, w * 0.06)
        _rect(img, rng.uniform(0, h * 0.3), h, x, x + tw, _jitter(rng, (0.35, 0.22, 0.12), 0.06))
    return _noise(rng, img, 0.04)


def shopping_mall(rng, h, w):
    floor = int(h * rng.uniform(0.5, 0.65))
    img = _fill(h, w, _jitter(rng, (0.82, 0.82, 0.8), 0.05))
    tile = max(4, int(w / rng.uniform(6, 10)))
    yy, xx = np.mgrid[0:h, 0:w]
    img[(yy >= floor) & (((yy // tile) + (xx // tile)) % 2 == 0)] *= 0.85
    x = rng.uniform(-w * 0.1, 0)
    while x < w:  # shop fronts
        sw = w * rng.uniform(0.18, 0.3)
        _rect(img, floor * 0.2, floor, x, x + sw, (0.25, 0.25, 0.28))
        _rect(img, floor * 0.3, floor * 0.95, x + 2, x + sw - 2, rng.uniform(0.2, 1.0, 3))
        _rect(img, floor * 0.2, floor * 0.3, x, x + sw, rng.uniform(0.3, 1.0, 3))  # sign
        x += sw + rng.uniform(2, 6)
    for lx in np.arange(rng.uniform(0, w / 5), w, w / 5):  # ceiling lights
        _circle(img, floor * 0.08, lx, 2.5, (1.0, 1.0, 0.9))
    return _noise(rng, img, 0.02)


def beach(rng, h, w):
    horizon, shore = int(h * rng.uniform(0.25, 0.4)), int(h * rng.uniform(0.5, 0.6))
    img = _fill(h, w, _jitter(rng, (0.9, 0.82, 0.6)))
    img[:horizon] = _sky(rng, h, w, horizon)
    img[horizon:shore] = _vgradient(shore - horizon, w, _jitter(rng, (0.1, 0.35, 0.6)), _jitter(rng, (0.2, 0.6, 0.7)))
    xx = np.arange(w)
    edge = (shore + 3 * np.sin(xx * rng.uniform(0.05, 0.12) + rng.uniform(0, 6))).astype(int)
    for x, e in zip(xx, edge):
        img[e - 2:e, x] = (0.95, 0.95, 0.95)  # surf line
    speck = rng.random((h, w)) < 0.04
    img[speck & (np.arange(h)[:, None] > shore)] *= 0.8
    return _noise(rng, img, 0.02)


def desert(rng, h, w):
    horizon = int(h * rng.uniform(0.2, 0.35))
    img = _fill(h, w, _jitter(rng, (0.85, 0.65, 0.35)))
    img[:horizon] = _vgradient(horizon, w, _jitter(rng, (0.7, 0.8, 0.95)), _jitter(rng, (0.95, 0.9, 0.8)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(3):  # dune ridges, darker further down
        ridge = horizon + (k + 1) * (h - horizon) / 4 + h * 0.06 * np.sin(xx * rng.uniform(0.03, 0.08) + rng.uniform(0, 6))
        img[yy > ridge] *= rng.uniform(0.85, 0.95)
    ripples = np.sin(yy * 1.3 + np.sin(xx * 0.1) * 3) > 0.9
    img[ripples & (yy > horizon)] *= 0.9
    return _noise(rng, img, 0.02)


def ice_rink(rng, h, w):
    boards = int(h * rng.uniform(0.3, 0.45))
    img = _fill(h, w, _jitter(rng, (0.88, 0.93, 0.98), 0.04))
    img[:boards] = _fill(boards, w, _jitter(rng, (0.15, 0.15, 0.2), 0.05))  # stands
    _rect(img, boards - h * 0.08, boards, 0, w, (0.97, 0.97, 0.97))
    x = 0.0
    while x < w:  # adverts on the boards
        aw = w * rng.uniform(0.1, 0.25)
        _rect(img, boards - h * 0.07, boards - h * 0.02, x + 1, x + aw - 1, rng.uniform(0.2, 1, 3))
        x += aw
    for _ in range(int(rng.integers(6, 14))):  # skate scratches
        y0, x0 = rng.uniform(boards, h), rng.uniform(0, w)
        ang, length = rng.uniform(-0.4, 0.4), rng.uniform(10, w * 0.5)
        for s in np.linspace(0, length, int(length)):
            yi, xi = int(y0 + s * np.sin(ang)), int(x0 + s * np.cos(ang))
            if boards <= yi < h and 0 <= xi < w:
                img[yi, xi] *= 0.85
    _rect(img, boards + (h - boards) * 0.5, boards + (h - boards) * 0.5 + 2, 0, w, (0.8, 0.2, 0.2))
    return _noise(rng, img, 0.015)


def soccer_field(rng, h, w):
    horizon = int(h * rng.uniform(0.15, 0.3))
    img = _fill(h, w, _jitter(rng, (0.25, 0.6, 0.2)))
    img[:horizon] = _fill(horizon, w, _jitter(rng, (0.45, 0.45, 0.5)))  # stands
    img[:horizon][rng.random((horizon, w)) < 0.3] = (0.8, 0.2, 0.2)
    stripe = max(4, int(w / rng.uniform(5, 9)))
    xx = np.arange(w)
    img[horizon:, (xx // stripe) % 2 == 0] *= 0.85  # mowing stripes
    y, x = horizon + (h - horizon) * rng.uniform(0.3, 0.7), w * rng.uniform(0.2, 0.8)
    _rect(img, y, y + 2, 0, w, (0.95, 0.95, 0.95))  # field lines
    _rect(img, horizon, h, x, x + 2, (0.95, 0.95, 0.95))
    return _noise(rng, img, 0.02)


def library(rng, h, w):
    img = _fill(h, w, _jitter(rng, (0.45, 0.3, 0.18), 0.05))
    shelf = h / rng.uniform(3.5, 5)
    for y in np.arange(rng.uniform(0, shelf / 2), h, shelf):
        _rect(img, y, y + 3, 0, w, (0.3, 0.18, 0.1))
        x = 0.0
        while x < w:  # books
            bw = rng.uniform(2, 5)
            _rect(img, y + 3 + rng.uniform(0, shelf * 0.3), y + shelf, x, x + bw - 0.5, rng.uniform(0.1, 0.9, 3))
            x += bw
    return _noise(rng, img, 0.02)


def street(rng, h, w):
    road = int(h * rng.uniform(0.55, 0.7))
    img = _fill(h, w, _jitter(rng, (0.35, 0.35, 0.37), 0.05))
    img[:road] = _sky(rng, h, w, road)
    x = rng.uniform(-w * 0.1, 0)
    while x < w:  # buildings with window grids
        bw, top = w * rng.uniform(0.15, 0.35), road * rng.uniform(0.05, 0.5)
        _rect(img, top, road, x, x + bw, _jitter(rng, (0.6, 0.55, 0.5), 0.15))
        for wy in np.arange(top + 3, road - 4, 6):
            for wx in np.arange(x + 2, x + bw - 3, 5):
                _rect(img, wy, wy + 3, wx, wx + 2.5, (0.2, 0.25, 0.35))
        x += bw
    _rect(img, road, road + 3, 0, w, (0.7, 0.7, 0.7))  # kerb
    for dx in np.arange(rng.uniform(0, 10), w, 14):
        _rect(img, road + (h - road) * 0.55, road + (h - road) * 0.55 + 2, dx, dx + 7, (0.95, 0.85, 0.2))
    return _noise(rng, img, 0.02)


def gymnasium(rng, h, w):
    floor = int(h * rng.uniform(0.45, 0.6))
    img = _fill(h, w, _jitter(rng, (0.9, 0.75, 0.5)))
    img[:floor] = _fill(floor, w, _jitter(rng, (0.85, 0.85, 0.75)))
    for x in np.arange(rng.uniform(0, 8), w, rng.uniform(8, 14)):  # wall bars
        _rect(img, floor * 0.1, floor, x, x + 2, (0.6, 0.4, 0.2))
    for y in np.arange(floor * 0.1, floor, rng.uniform(5, 9)):
        _rect(img, y, y + 1, 0, w, (0.6, 0.4, 0.2))
    img[floor:, ::max(3, int(w / 16))] *= 0.88
    return _noise(rng, img, 0.02)


SCENES = {s.name: s for s in [
    Scene("swimming_pool/outdoor", 326, (("swimming_pool/indoor", 325), ("water_park", 353), ("lake/natural", 205)), pool_outdoor),
    Scene("basketball_court/indoor", 44, (("gymnasium/indoor", 168), ("arena/performance", 16), ("volleyball_court/outdoor", 351)), basketball_court),
    Scene("forest/broadleaf", 150, (("forest_path", 151), ("rainforest", 279), ("bamboo_forest", 36)), forest),
    Scene("shopping_mall/indoor", 302, (("department_store", 115), ("market/indoor", 222), ("supermarket", 321)), shopping_mall),
    Scene("beach", 48, (("coast", 97), ("ocean", 243), ("beach_house", 49)), beach),
    Scene("desert/sand", 116, (("desert/vegetation", 117), ("butte", 73), ("desert_road", 118)), desert),
    Scene("ice_skating_rink/indoor", 188, (("ice_skating_rink/outdoor", 189), ("arena/hockey", 15)), ice_rink),
    Scene("soccer_field", 310, (("football_field", 149), ("stadium/soccer", 314), ("baseball_field", 42)), soccer_field),
    Scene("library/indoor", 212, (("bookstore", 60), ("library/outdoor", 213), ("classroom", 92)), library),
    Scene("street", 319, (("downtown", 125), ("crosswalk", 112), ("alley", 4)), street),
    Scene("swimming_pool/indoor", 325, (("swimming_pool/outdoor", 326), ("water_park", 353), ("locker_room", 219)), pool_indoor),
    Scene("gymnasium/indoor", 168, (("basketball_court/indoor", 44), ("boxing_ring", 65), ("locker_room", 219)), gymnasium),
]}
MAIN_SCENES = list(SCENES)[:10]   # train / val / test
NOVEL_SCENES = list(SCENES)[10:]  # novel_train / novel_test (the Diving48-like target)


def render_background(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 (H, W, 3) background in [0, 1] from the scene's family."""
    return np.clip(SCENES[name].draw(rng, height, width), 0, 1)


def scene_names() -> list[str]:
    """The 365 scene names of shards made from this set: the names this world knows (its scenes
    and their related categories), "places365:<index>" for the rest."""
    names = [f"places365:{i}" for i in range(NUM_SCENES)]
    for scene in SCENES.values():
        for name, idx in ((scene.name, scene.index), *scene.related):
            names[idx] = name
    return names


def scene_soft_label(name: str) -> np.ndarray:
    """The 365-dim soft label of a scene: see the module docstring."""
    scene = SCENES[name]
    label = np.full(NUM_SCENES, UNIFORM_MASS / NUM_SCENES, np.float64)
    label[scene.index] += TRUE_MASS
    for _, idx in scene.related:
        label[idx] += RELATED_MASS / len(scene.related)
    return (label / label.sum()).astype(np.float32)
