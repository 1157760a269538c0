#!/usr/bin/env python3
"""Score the demo model on held-out synthetic clips, through reelql and through transformers.

Renders test-split scenes (training/synth.py; seeds no train or validation scene uses) to H.264
mp4, then for each clip asks for the description and every ground-truth question:
  - reelql:       `reelql describe CLIP --json --question ...` (the shipped binary, default model);
  - transformers: Qwen2VLForConditionalGeneration.generate on the same checkpoint, frames
                  sampled by qwen-vl-utils' rule and processed by Qwen2VLVideoProcessor.
Scores:
  - description attribute accuracy: per ground-truth shape, is it named (color + shape), is its
    motion right, its appearance time, its disappearance time, its change (color or growth, and
    when); per clip, is the number of shapes right; over all attributes of all clips;
  - answers: exact match after trimming.

  numpy 2.4.6, av 18.1.0, torch 2.15.0, transformers 5.24.0 (reference virtualenv)
  usage: PY=$(scripts/reference-venv.sh)
         $PY training/evaluate.py --count 200                     # reelql and transformers
         $PY training/evaluate.py --count 200 --only reelql --reelql .build/release/reelql
         $PY training/evaluate.py --count 200 --only reelql --dtype int8 --out training/logs/evaluation-int8.json
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import synth  # noqa: E402

SENTENCE = re.compile(r"An? (\w+) (\w+)(?: appears at (\d+) seconds? and)? (?:moves (\w+)|(stays still))"
                      r"(?: and disappears at (\d+) seconds?)?(?: and (?:turns (\w+)|(grows)) at (\d+) seconds?)?\.")


def parse(description):
    """{(color, shape): facts} from a description in the reference form; unparsable text is skipped."""
    out = {}
    for m in SENTENCE.finditer(description):
        color, shape, appear, motion, still, leave, turns, grows, at = m.groups()
        out[(color, shape)] = {"motion": "still" if still else motion, "appear": int(appear or 0),
                               "leave": int(leave) if leave else None,
                               "change": ({"at": int(at), "color": turns} if turns else {"at": int(at), "grow": True}) if at else None}
    return out


def score_description(scene, text):
    """(correct, total) attribute counts for one clip."""
    found = parse(text)
    correct = total = 0
    for obj in scene["objects"]:
        got = found.get((obj["color"], obj["shape"]))
        checks = [got is not None,
                  got is not None and got["motion"] == obj["motion"],
                  got is not None and got["appear"] == obj["appear"]]
        if obj["leave"] is not None or (got and got["leave"] is not None):
            checks.append(got is not None and got["leave"] == obj["leave"])
        if obj["change"] is not None or (got and got["change"] is not None):
            checks.append(got is not None and got["change"] == obj["change"])
        correct += sum(checks)
        total += len(checks)
    correct += len(found) == len(scene["objects"])  # the count of shapes
    total += 1
    return correct, total


def check_scorer(count=2000):
    """The scorer must give full marks to every reference description (and fewer to a wrong one)."""
    for i in range(count):
        r = synth.record(synth.make_scene("validation", i))
        c, t = score_description(r["scene"], r["description"])
        if c != t:
            raise AssertionError(f"scorer: {r['id']} reference description scores {c}/{t}: {r['description']}")
        wrong = r["description"].replace(" moves ", " moves sideways ").replace("stays still", "moves sideways")
        if score_description(r["scene"], wrong)[0] >= t:
            raise AssertionError(f"scorer: {r['id']} a wrong description scores full marks: {wrong}")


def run_reelql(binary, path, questions, max_new, extra=()):
    args = [binary, "describe", path, "--json", "--max-new-tokens", str(max_new), *extra]
    for q in questions:
        args += ["--question", q]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"reelql failed on {path}: {r.stderr}")
    out = json.loads(r.stdout)
    return out["description"], [a["answer"] for a in out["answers"]]


def main():
    ap = argparse.ArgumentParser(description="Score the demo model on held-out clips.")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--start", type=int, default=0, help="first test-split index")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--reelql", default=os.path.join(ROOT, ".build", "release", "reelql"))
    ap.add_argument("--only", choices=["reelql", "transformers"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(HERE, "logs", "evaluation.json"))
    ap.add_argument("--keep", help="keep the rendered clips in this directory")
    ap.add_argument("--dtype", choices=["f32", "bf16", "int8"], help="reelql's --dtype (default: the checkpoint's)")
    ap.add_argument("--vision-dtype", choices=["f32", "bf16", "int8"], help="reelql's --vision-dtype")
    args = ap.parse_args()

    check_scorer()
    records = [synth.record(synth.make_scene("test", i)) for i in range(args.start, args.start + args.count)]
    work = args.keep or tempfile.mkdtemp(prefix="reelql-eval-")
    os.makedirs(work, exist_ok=True)
    for r in records:
        synth.write_mp4(r["scene"], os.path.join(work, r["id"] + ".mp4"))

    engines = {}
    if args.only in (None, "reelql"):
        extra = (["--dtype", args.dtype] if args.dtype else []) + (["--vision-dtype", args.vision_dtype] if args.vision_dtype else [])

        def reelql(path, questions):
            return run_reelql(args.reelql, path, questions, args.max_new_tokens, extra)
        os.environ["REELQL_MODEL"] = args.model
        engines["reelql"] = reelql
    if args.only in (None, "transformers"):
        import torch
        import train
        from tokenizers import Tokenizer
        from transformers import Qwen2VLForConditionalGeneration
        torch.set_num_threads(os.cpu_count())
        model = Qwen2VLForConditionalGeneration.from_pretrained(args.model).eval()
        tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
        proc = train.processor()
        merge = model.config.vision_config.spatial_merge_size ** 2

        def transformers(path, questions):
            v = proc(videos=[train.decode_sampled(path)], return_tensors="pt")
            data = (None, v["pixel_values_videos"], v["video_grid_thw"][0])
            return (train.greedy(model, tok, data, train.DESCRIBE, merge, args.max_new_tokens),
                    [train.greedy(model, tok, data, q, merge, args.max_new_tokens) for q in questions])
        engines["transformers"] = transformers

    outputs = {}
    results = {"count": args.count, "start": args.start, "model": os.path.relpath(args.model, ROOT), "engines": {}}
    for name, engine in engines.items():
        t0 = time.time()
        dc = dt = ac = at = 0
        failures, texts, kinds = [], [], {}
        for r in records:
            questions = [qa["question"] for qa in r["qa"]]
            description, answers = engine(os.path.join(work, r["id"] + ".mp4"), questions)
            texts += [description] + answers
            c, t = score_description(r["scene"], description)
            dc, dt = dc + c, dt + t
            for qa, got in zip(r["qa"], answers):
                ok = got.strip() == qa["answer"]
                ac, at = ac + ok, at + 1
                k = kinds.setdefault(synth.question_kind(qa["question"]), [0, 0])
                k[0], k[1] = k[0] + ok, k[1] + 1
                if not ok and len(failures) < 20:
                    failures.append({"id": r["id"], "question": qa["question"], "expected": qa["answer"], "got": got})
            if c < t and len(failures) < 20:
                failures.append({"id": r["id"], "expected": r["description"], "got": description})
        results["engines"][name] = {"description_attribute_accuracy": round(100 * dc / dt, 2), "attributes": dt,
                                    "answer_exact_match": round(100 * ac / at, 2), "answers": at,
                                    "answer_exact_match_by_kind": {q: [round(100 * k[0] / k[1], 1), k[1]]
                                                                   for q, k in sorted(kinds.items())},
                                    "seconds": round(time.time() - t0, 1), "failures": failures}
        outputs[name] = texts
        print(f"{name}: descriptions {100 * dc / dt:.2f}% of {dt} attributes, answers {100 * ac / at:.2f}% of {at}"
              f" ({time.time() - t0:.0f} s)", flush=True)
    if len(engines) == 2:
        a, b = results["engines"]["reelql"], results["engines"]["transformers"]
        results["gap_points"] = {k: round(abs(a[k] - b[k]), 2) for k in ["description_attribute_accuracy", "answer_exact_match"]}
        same = sum(x == y for x, y in zip(outputs["reelql"], outputs["transformers"]))
        results["identical_outputs"] = f"{same}/{len(outputs['reelql'])}"
        print("gap (points):", results["gap_points"], "identical outputs:", results["identical_outputs"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
