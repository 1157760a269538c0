#!/usr/bin/env python3
"""A synthetic world of colored shapes, for training and evaluating reelql's demo model.

Each scene is 2–8 s of 1–3 shapes (circle, square, triangle) in five colors on a dark
background. A shape may be there from the start or appear at a whole second, may leave at a
whole second, may move (left, right, up, down) or stay, and may change color or grow at a whole
second. Events fall on whole seconds because at reelql's default 2 fps one temporal patch of the
video tower is one second: the M-RoPE time index is the only thing that can tell the model when.

From a scene's ground truth come a reference description and question/answer pairs: color,
shape, count, direction, order, and time ("When does the blue circle appear?" → "at 3 seconds").

Everything is a pure function of (split, index): scene seeds are derived with SHA-256 from the
split name, so train/validation/test never share a seed and reruns give identical scenes, frames
and text. Rendering is numpy only; writing mp4 needs PyAV (libx264).

  usage: python training/synth.py --split test --count 200 --out build/test   # mp4 + jsonl
         python training/synth.py --split train --count 5 --print              # text only

  numpy 2.4.6, av 18.1.0 (the reference virtualenv, scripts/reference-venv.sh)
"""
import argparse
import hashlib
import json
import os
import random

import numpy as np

SIZE = 112                     # frames are SIZE×SIZE, a multiple of 28: smart_resize keeps them
FPS = 10                       # rendered frame rate
SPLITS = ("train", "validation", "test", "demo")   # demo: the clips committed in fixtures/demo
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
          "yellow": (240, 220, 40), "white": (245, 245, 245)}
BACKGROUNDS = [(20, 20, 28), (32, 24, 16), (16, 30, 24), (28, 28, 28)]
MOTIONS = ("still", "left", "right", "up", "down")
NUMBERS = ("zero", "one", "two", "three", "four")
SPEED = 8.0                    # pixels per second of a moving shape (8 s × 8 = 64 px of travel)
GROWTH = 1.3                   # a growing shape's size factor (24 px → 31 px: lanes are 36 px apart)


def scene_seed(split, index):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    digest = hashlib.sha256(f"reelql-synth/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def make_scene(split, index):
    """The ground truth of one scene: a JSON-able dict."""
    rng = random.Random(scene_seed(split, index))
    duration = rng.randint(2, 8)
    count = rng.choice((1, 1, 2, 2, 3))
    # Distinct (color, shape) pairs, so "the blue circle" names exactly one shape.
    pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES], count)
    objects = []
    for color, shape in pairs:
        obj = {"shape": shape, "color": color, "size": rng.choice((20, 22, 24)),
               "appear": 0, "leave": None, "motion": rng.choice(MOTIONS), "change": None}
        kind = rng.random()
        if kind < 0.3 and duration >= 3:
            obj["appear"] = rng.randint(1, duration - 1)
        elif kind < 0.45 and duration >= 3:
            obj["leave"] = rng.randint(1, duration - 1)
        elif kind < 0.65 and duration >= 3:
            at = rng.randint(1, duration - 1)
            if rng.random() < 0.6:
                obj["change"] = {"at": at, "color": rng.choice([c for c in COLORS if c != color])}
            else:
                obj["change"] = {"at": at, "grow": True}
        objects.append(obj)
    # Each shape has its own lane (a row, or a column), and moves only along it: shapes never
    # overlap. The scene's lanes are rows (motion left/right) or columns (up/down).
    rows = rng.random() < 0.5
    for obj, slot in zip(objects, rng.sample(range(3), count)):
        if obj["motion"] != "still":
            obj["motion"] = rng.choice(("left", "right") if rows else ("up", "down"))
        lane = 20 + slot * 36                     # 20, 56 or 92
        lo, hi = 22 + rng.uniform(0, 4), SIZE - 22 - rng.uniform(0, 4)
        along = {"right": lo, "down": lo, "left": hi, "up": hi}.get(obj["motion"], rng.uniform(36, SIZE - 36))
        obj["start"] = [along, lane] if rows else [lane, along]
    return {"split": split, "index": index, "seed": scene_seed(split, index), "duration": duration,
            "fps": FPS, "size": SIZE, "background": list(rng.choice(BACKGROUNDS)), "objects": objects}


def state_at(obj, t):
    """(visible, center, color name, size) of a shape at time t seconds."""
    visible = t >= obj["appear"] and (obj["leave"] is None or t < obj["leave"])
    dx, dy = {"still": (0, 0), "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[obj["motion"]]
    center = (obj["start"][0] + dx * SPEED * t, obj["start"][1] + dy * SPEED * t)
    color, size = obj["color"], obj["size"]
    change = obj["change"]
    if change and t >= change["at"]:
        if "color" in change:
            color = change["color"]
        else:
            size = int(size * GROWTH)
    return visible, center, color, size


def shape_masks(scene, t):
    """[(object index, color name, boolean mask (SIZE, SIZE))] of the shapes visible at time t,
    in drawing order (a later shape covers an earlier one)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    out = []
    for k, obj in enumerate(scene["objects"]):
        visible, (cx, cy), color, size = state_at(obj, t)
        if not visible:
            continue
        r = size / 2
        if obj["shape"] == "circle":
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        elif obj["shape"] == "square":
            mask = (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
        else:  # an upward triangle: inside the band and between the two slanted edges
            top, bottom = cy - r, cy + r
            half = (ys - top) / (2 * r) * r
            mask = (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= half)
        out.append((k, color, mask))
    return out


def render_frame(scene, t):
    """An RGB uint8 frame (SIZE, SIZE, 3) at time t."""
    frame = np.empty((SIZE, SIZE, 3), np.uint8)
    frame[:] = scene["background"]
    for _, color, mask in shape_masks(scene, t):
        frame[mask] = COLORS[color]
    return frame


def label_frame(scene, t):
    """Per-pixel ground truth at time t, for training's auxiliary losses: int arrays (SIZE, SIZE)
    of the color class, the shape class and the motion class (0 for the background, else 1 + the
    index in COLORS / SHAPES / MOTIONS)."""
    colors, shapes, motions = (np.zeros((SIZE, SIZE), np.int64) for _ in range(3))
    for k, color, mask in shape_masks(scene, t):
        obj = scene["objects"][k]
        colors[mask] = 1 + list(COLORS).index(color)
        shapes[mask] = 1 + SHAPES.index(obj["shape"])
        motions[mask] = 1 + MOTIONS.index(obj["motion"])
    return colors, shapes, motions


def render(scene):
    """All frames at FPS, as an array (n, SIZE, SIZE, 3)."""
    n = scene["duration"] * scene["fps"]
    return np.stack([render_frame(scene, i / scene["fps"]) for i in range(n)])


def write_mp4(scene, path):
    """H.264 (yuv420p, CRF 18) at FPS, as users' files are."""
    import av
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=scene["fps"])
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for rgb in render(scene):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# ---- text from ground truth ------------------------------------------------------------------

def name(obj):
    return f"{obj['color']} {obj['shape']}"


def seconds(t):
    return "1 second" if t == 1 else f"{t} seconds"


def described_order(scene):
    """The shapes in the order the description names them: by appearance time, then by position
    at the start (left to right, then top to bottom), so the text is a function of the scene."""
    return sorted(scene["objects"], key=lambda o: (o["appear"], o["start"][0], o["start"][1]))


def describe(scene):
    """The reference description: one sentence per shape, in described_order."""
    parts = []
    for obj in described_order(scene):
        verb = "stays still" if obj["motion"] == "still" else f"moves {obj['motion']}"
        if obj["appear"] > 0:
            s = f"a {name(obj)} appears at {seconds(obj['appear'])} and {verb}"
        else:
            s = f"a {name(obj)} {verb}"
        if obj["leave"] is not None:
            s += f" and disappears at {seconds(obj['leave'])}"
        change = obj["change"]
        if change and "color" in change:
            s += f" and turns {change['color']} at {seconds(change['at'])}"
        elif change:
            s += f" and grows at {seconds(change['at'])}"
        parts.append(s[0].upper() + s[1:] + ".")
    return " ".join(parts)


def questions(scene):
    """Question/answer pairs from the ground truth (answers are short and exact)."""
    objs = scene["objects"]
    qa = [("How many shapes are there?", NUMBERS[len(objs)])]
    for obj in objs:
        qa.append((f"What color is the {obj['shape']}?" if sum(o["shape"] == obj["shape"] for o in objs) == 1
                   else None, obj["color"]))
        qa.append((f"Which way does the {name(obj)} move?",
                   "it stays still" if obj["motion"] == "still" else obj["motion"]))
        qa.append((f"When does the {name(obj)} appear?",
                   "at the start" if obj["appear"] == 0 else f"at {seconds(obj['appear'])}"))
        if obj["leave"] is not None:
            qa.append((f"When does the {name(obj)} disappear?", f"at {seconds(obj['leave'])}"))
        if obj["change"] and "color" in obj["change"]:
            qa.append((f"What color does the {name(obj)} turn?", obj["change"]["color"]))
    late = [o for o in objs if o["appear"] > 0]
    if len(objs) >= 2:
        a, b = objs[0], objs[1]
        if a["appear"] != b["appear"]:
            first = a if a["appear"] < b["appear"] else b
            qa.append((f"Which appears first, the {name(a)} or the {name(b)}?", f"the {name(first)}"))
    qa.append(("Does any shape appear later?", "yes" if late else "no"))
    return [{"question": q, "answer": a} for q, a in qa if q is not None]


def question_kind(question):
    """A question's template, for per-kind scores: "When does the X appear?" → "When does appear"."""
    words = question.rstrip("?").replace(",", "").split()
    return " ".join(w for w in words if w not in COLORS and w not in SHAPES and w not in ("the", "or"))[:40]


def record(scene):
    return {"id": f"{scene['split']}-{scene['index']:05d}", "scene": scene,
            "description": describe(scene), "qa": questions(scene)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=SPLITS, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--start", type=int, default=0, help="first index")
    ap.add_argument("--out", help="directory for <id>.mp4 files and scenes.jsonl")
    ap.add_argument("--print", action="store_true", help="print descriptions and Q/A")
    args = ap.parse_args()
    records = [record(make_scene(args.split, i)) for i in range(args.start, args.start + args.count)]
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "scenes.jsonl"), "w") as f:
            for r in records:
                write_mp4(r["scene"], os.path.join(args.out, r["id"] + ".mp4"))
                f.write(json.dumps(r) + "\n")
    if args.print or not args.out:
        for r in records:
            print(r["id"], r["scene"]["duration"], "s:", r["description"])
            for qa in r["qa"]:
                print("   ", qa["question"], "→", qa["answer"])


if __name__ == "__main__":
    main()
