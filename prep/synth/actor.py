"""The articulated figure of the synthetic set, and actions defined only by motion.

A figure (frontal view, capsules and a round head) has 12 degrees of freedom (DOFs): both
shoulders, elbows, hips and knees, vertical bounce, torso sway, horizontal slide and a width
factor (turning about the vertical axis). An action names the DOFs that *move*: each moving DOF
oscillates over its whole range; every other DOF holds a value drawn at a random phase of the
same oscillation. So the value of any DOF in a single frame has the same distribution in every
action, and only motion over time tells the actions apart. Left/right variants are drawn at
random, so every action is unchanged by a horizontal flip (a training augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# DOF -> (low, high). Angles in degrees: shoulders/hips measured outward from hanging down,
# elbows/knees as bend; bounce in frame heights (up), slide in frame widths, width a factor.
DOFS = {
    "shoulder_l": (20, 160), "shoulder_r": (20, 160),
    "elbow_l": (0, 110), "elbow_r": (0, 110),
    "hip_l": (3, 45), "hip_r": (3, 45),
    "knee_l": (0, 70), "knee_r": (0, 70),
    "bounce": (0.0, 0.08), "sway": (-20, 20), "slide": (-0.12, 0.12), "width": (0.35, 1.0),
}

# action -> groups of moving DOFs; a group with two names means "one of the two, at random"
ACTIONS = {
    "wave_arm": [("shoulder_l", "shoulder_r")],
    "flap_arms": [("shoulder_l",), ("shoulder_r",)],
    "wave_hand": [("elbow_l", "elbow_r")],
    "kick": [("hip_l", "hip_r")],
    "run_in_place": [("knee_l",), ("knee_r",)],
    "bounce": [("bounce",)],
    "sway": [("sway",)],
    "slide": [("slide",)],
    "spin": [("width",)],
    "jumping_jacks": [("shoulder_l",), ("shoulder_r",), ("hip_l",), ("hip_r",)],
}
NOVEL_ACTIONS = {  # disjoint from ACTIONS: the transfer target
    "both_hands": [("elbow_l",), ("elbow_r",)],
    "stomp": [("knee_l", "knee_r")],
    "leg_swings": [("hip_l",), ("hip_r",)],
    "arm_and_leg": [("shoulder_l", "shoulder_r"), ("hip_l", "hip_r")],
    "bounce_sway": [("bounce",), ("sway",)],
}


@dataclass(frozen=True)
class Motion:
    """How strongly things move: the world's difficulty dial for the actor."""

    amplitude: float = 1.0      # fraction of each moving DOF's range swept
    period: tuple = (10, 18)    # frames per oscillation, drawn per DOF
    drift: float = 0.0          # still DOFs wander by this fraction of their range (nuisance)


def dof_tracks(action: str, frames: int, rng: np.random.Generator, motion: Motion) -> dict[str, np.ndarray]:
    """DOF -> value per frame for one performance of an action."""
    groups = {**ACTIONS, **NOVEL_ACTIONS}[action]
    moving = {group[int(rng.integers(len(group)))] for group in groups}
    t = np.arange(frames, dtype=np.float64)
    tracks = {}
    for dof, (lo, hi) in DOFS.items():
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        phase = rng.uniform(0, 2 * np.pi)
        if dof in moving:
            period = rng.uniform(*motion.period)
            tracks[dof] = centre + half * motion.amplitude * np.sin(2 * np.pi * t / period + phase)
        else:
            value = centre + half * motion.amplitude * np.sin(phase)  # same marginal as moving
            wander = motion.drift * half * np.sin(2 * np.pi * t / rng.uniform(40, 80) + rng.uniform(0, 2 * np.pi))
            tracks[dof] = np.clip(value + wander, lo, hi)
    return tracks


@dataclass(frozen=True)
class Look:
    """Appearance, independent of action and scene."""

    height: float    # figure height in pixels
    x: float         # hip centre, pixels
    feet_y: float    # ground line, pixels
    shirt: tuple
    pants: tuple
    skin: tuple


SKIN_TONES = [(0.96, 0.8, 0.69), (0.87, 0.67, 0.5), (0.68, 0.47, 0.33), (0.45, 0.3, 0.2), (0.3, 0.2, 0.14)]


def random_look(rng: np.random.Generator, frame_h: int, frame_w: int, size_range: tuple) -> Look:
    height = frame_h * rng.uniform(*size_range)
    margin = 0.3 * height
    return Look(height=height, x=rng.uniform(margin, frame_w - margin) if frame_w > 2 * margin else frame_w / 2,
                feet_y=frame_h * rng.uniform(0.93, 0.99),
                shirt=tuple(rng.uniform(0.05, 0.95, 3)), pants=tuple(rng.uniform(0.05, 0.95, 3)),
                skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))])


def skeleton(pose: dict[str, float], look: Look, frame_h: int, frame_w: int) -> list[tuple]:
    """Pose values + look -> capsules (x0, y0, x1, y1, radius, colour) in pixels, back to front."""
    u = look.height / 1.12  # body unit: legs 0.5, torso 0.36, neck + head 0.26
    hip = np.array([look.x + pose["slide"] * frame_w, look.feet_y - 0.5 * u - pose["bounce"] * frame_h])
    sway = np.radians(pose["sway"])
    up = np.array([np.sin(sway), -np.cos(sway)])
    across = np.array([np.cos(sway), np.sin(sway)])
    neck = hip + 0.36 * u * up
    head = neck + 0.14 * u * up
    parts = []

    def limb(start, angle, bend, side, lengths, radii, colours):
        a1, a2 = np.radians(angle), np.radians(angle + bend)
        mid = start + lengths[0] * u * np.array([side * np.sin(a1), np.cos(a1)])
        end = mid + lengths[1] * u * np.array([side * np.sin(a2), np.cos(a2)])
        parts.append((start, mid, radii[0] * u, colours[0]))
        parts.append((mid, end, radii[1] * u, colours[1]))

    for side, s in ((-1, "l"), (1, "r")):  # legs bend inward at the knee
        limb(hip + side * 0.07 * u * np.array([1.0, 0]), pose[f"hip_{s}"], -pose[f"knee_{s}"],
             side, (0.25, 0.25), (0.045, 0.038), (look.pants, look.pants))
    parts.append((hip, neck, 0.08 * u, look.shirt))
    for side, s in ((-1, "l"), (1, "r")):  # arms bend outward/up at the elbow
        limb(neck + side * 0.1 * u * across, pose[f"shoulder_{s}"], pose[f"elbow_{s}"], side,
             (0.19, 0.17), (0.034, 0.028), (look.shirt, look.skin))
    parts.append((head, head, 0.09 * u, look.skin))
    width, cx = pose["width"], hip[0]  # turning: horizontal offsets from the body axis shrink
    return [((cx + (a[0] - cx) * width, a[1]), (cx + (b[0] - cx) * width, b[1]), r, c) for a, b, r, c in parts]


def draw_capsules(frame: np.ndarray, capsules: list[tuple]) -> np.ndarray:
    """Draw capsules (with a darker 1-px outline) onto a float32 frame; returns the coverage mask."""
    h, w = frame.shape[:2]
    covered = np.zeros((h, w), bool)
    for (x0, y0), (x1, y1), r, colour in capsules:
        outer = r + 1.0
        c0, c1 = int(max(0, np.floor(min(x0, x1) - outer))), int(min(w, np.ceil(max(x0, x1) + outer) + 1))
        r0, r1 = int(max(0, np.floor(min(y0, y1) - outer))), int(min(h, np.ceil(max(y0, y1) + outer) + 1))
        if c0 >= c1 or r0 >= r1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5  # pixel centres
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
        region = frame[r0:r1, c0:c1]
        region[dist <= outer] = np.asarray(colour, np.float32) * 0.45
        region[dist <= r] = colour
        covered[r0:r1, c0:c1] |= dist <= outer
    return covered


def mask_box(covered: np.ndarray) -> list[float] | None:
    """Tight normalised box [x1, y1, x2, y2] of a coverage mask (whole pixels), None if empty."""
    rows, cols = np.nonzero(covered.any(axis=1))[0], np.nonzero(covered.any(axis=0))[0]
    if not len(rows):
        return None
    h, w = covered.shape
    return [cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h]
