#!/usr/bin/env python3
"""Train reelql's demo model: a small Qwen2-VL on the synthetic shape world (training/synth.py).

Steps, with fixed seeds and scene indices (scenes, frames and text are deterministic; 2-thread CPU
torch arithmetic is not bit-exact, so reruns agree to about the 4th digit of the loss):
 1. render N train and M validation scenes to H.264 mp4 (as users' files are) and decode them
    again with PyAV; sample frames with qwen-vl-utils' rule at 2 fps (smart_nframes, indices
    round(linspace(0, total-1, n))) and process them with transformers' Qwen2VLVideoProcessor at
    112×112 — the sampling and processing rules reelql implements;
 2. train a byte-level BPE tokenizer (Qwen2's pre-tokenizer regex) on the train split's text and
    add Qwen2-VL's special tokens;
 3. train Qwen2VLForConditionalGeneration (a small config of the real architecture) on examples
    of each scene: "Describe this video." → the reference description (--describe-repeat times
    per epoch), and each question → its answer, in Qwen2-VL's chat format, with the loss on the
    answer only (plus training-only auxiliary heads, see Auxiliary), a few examples of a scene per
    batch sharing one vision pass;
 4. log train/validation loss (training/logs/), score greedy answers on validation scenes, and
    write the checkpoint in the Hugging Face layout to models/demo/.

  torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3, qwen-vl-utils 0.0.14, av 18.1.0
  usage: PY=$(scripts/reference-venv.sh)
         $PY training/train.py                       # the shipped model (about an hour, 2 cores)
         $PY training/train.py --train 64 --steps 20 --out /tmp/demo-smoke   # a smoke run
"""
import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time

import av
import numpy as np
import torch
from qwen_vl_utils.vision_process import smart_nframes
from tokenizers import Tokenizer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "fixtures", "scripts"))
import synth  # noqa: E402
from qwen2vl_rules import released_rope_index, train_bpe  # noqa: E402

SYSTEM = "You are a helpful assistant."
DESCRIBE = "Describe this video."
FPS = 2.0
PIXELS = synth.SIZE * synth.SIZE
CHAT_TEMPLATE = os.path.join(ROOT, "fixtures", "tokenizers", "qwen2", "chat_template.json")


def processor():
    return Qwen2VLVideoProcessor(size={"shortest_edge": PIXELS, "longest_edge": PIXELS}, do_sample_frames=False)


def decode_sampled(path, with_times=False):
    """Frames sampled as reelql samples them (constant-rate files): (n, H, W, 3) uint8, and with
    with_times their presentation times in seconds."""
    with av.open(path) as c:
        s = c.streams.video[0]
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(s)), key=lambda x: x[0])
        rate, base = float(s.average_rate), float(s.time_base)
    total = len(frames)
    n = smart_nframes({"fps": FPS}, total_frames=total, video_fps=rate)
    idx = torch.linspace(0, total - 1, n).round().long().tolist()
    pixels = np.stack([frames[i][1] for i in idx])
    return (pixels, [frames[i][0] * base for i in idx]) if with_times else pixels


def cell_labels(scene, times, cell=28):
    """Ground truth per merged video token, for the auxiliary losses: (tokens, 6) int64 — the
    color, shape and motion class (synth.label_frame) in each of the temporal patch's two frames,
    by majority over the token's cell×cell pixels (background unless a shape covers ≥ 1/8 of
    it), in the processor's token order (t, row, column)."""
    n = synth.SIZE // cell
    per_patch = []
    for a, b in zip(times[0::2], times[1::2]):
        maps = [m for t in (a, b) for m in synth.label_frame(scene, t)]
        counts = np.eye(8, dtype=np.int64)[np.stack(maps, -1)].reshape(n, cell, n, cell, len(maps), 8).sum((1, 3))
        counts[..., 0] = 0                                    # (n, n, maps, 8 classes)
        label = np.where(counts.max(-1) * 8 >= cell * cell, counts.argmax(-1), 0)
        per_patch.append(label.reshape(n * n, len(maps)))
    return torch.from_numpy(np.concatenate(per_patch))


def name_class(o):
    """A shape's name class: its color at the start × its shape (COLORS × SHAPES)."""
    return list(synth.COLORS).index(o["color"]) * len(synth.SHAPES) + synth.SHAPES.index(o["shape"])


def change_class(change):
    """0 no change, 1 grew, 2 + COLORS index: turned that color."""
    return 0 if not change else 1 if "grow" in change else 2 + list(synth.COLORS).index(change["color"])


def record_labels(scene, times, cell=28):
    """Ground truth per merged video token for the language model's auxiliary losses, each
    computable from the token and the video before it (the decoder attends causally):
    (tokens, 6) int64 — the name of the shape the token's cell shows (its color at the start and its
    shape: COLORS × SHAPES classes, the last class for none), that shape's appearance time in whole
    seconds, its change so far (0 none, 1 grew, 2 + COLORS index: turned that color), and the name's
    parts apart: its color at the start, its shape and its motion (indices in COLORS, SHAPES,
    MOTIONS); -100 where no shape is shown — and (tokens, 3 × names) float: which shapes appeared,
    disappeared and changed (color or size) at the token's temporal patch (the same for all its
    tokens)."""
    n = synth.SIZE // cell
    names = len(synth.COLORS) * len(synth.SHAPES)
    objects = scene["objects"]
    name = [name_class(o) for o in objects]
    labels, events, before, prev = [], [], set(), -1.0
    for a, b in zip(times[0::2], times[1::2]):
        owner = np.zeros((synth.SIZE, synth.SIZE, len(objects) + 1), np.int64)   # pixels per object, both frames
        for t in (a, b):
            for k, _, mask in synth.shape_masks(scene, t):
                owner[..., k + 1] += mask
        counts = owner.reshape(n, cell, n, cell, -1).sum((1, 3)).reshape(n * n, -1)
        counts[:, 0] = 0
        shown = np.where(counts.max(-1) * 8 >= 2 * cell * cell, counts.argmax(-1), 0)
        rows = np.full((n * n, 6), -100, np.int64)
        rows[:, 0] = names
        for token, k in enumerate(shown):
            if k:
                o = objects[k - 1]
                change = o["change"]
                rows[token] = (name[k - 1], o["appear"], change_class(change if change and b >= change["at"] else None),
                               list(synth.COLORS).index(o["color"]), synth.SHAPES.index(o["shape"]),
                               synth.MOTIONS.index(o["motion"]))
        now = {k for k, o in enumerate(objects) if synth.state_at(o, a)[0] or synth.state_at(o, b)[0]}
        event = np.zeros(3 * names, np.float32)
        if a > 0:
            for k in now - before:
                event[name[k]] = 1
            for k in before - now:
                event[names + name[k]] = 1
            for k, o in enumerate(objects):   # the first patch that shows the change
                if o["change"] and o["change"]["at"] <= b and not o["change"]["at"] <= prev:
                    event[2 * names + name[k]] = 1
        prev = b
        before = now
        labels.append(rows)
        events.append(np.repeat(event[None], n * n, 0))
    return torch.from_numpy(np.concatenate(labels)), torch.from_numpy(np.concatenate(events))


def render_scene(split, index, workdir):
    """(record, pixel_values fp16, grid_thw, cell labels, record labels, events) of one scene."""
    rec = synth.record(synth.make_scene(split, index))
    path = os.path.join(workdir, rec["id"] + ".mp4")
    synth.write_mp4(rec["scene"], path)
    frames, times = decode_sampled(path, with_times=True)
    os.remove(path)
    v = processor()(videos=[frames], return_tensors="pt")
    grid = v["video_grid_thw"][0]
    labels = cell_labels(rec["scene"], times)
    assert len(labels) == int(grid.prod()) // 4, (len(labels), grid)
    return (rec, v["pixel_values_videos"].half(), grid, labels, *record_labels(rec["scene"], times))


def _render_worker(job):
    """render_scene in a pool process, tensors as numpy arrays (pickled by value: torch would pass
    each tensor as a shared file descriptor, and thousands of them run out of descriptors)."""
    torch.set_num_threads(1)
    split, index, workdir = job
    rec, *tensors = render_scene(split, index, workdir)
    return rec, *(t.numpy() for t in tensors)


def render_split(split, count, workdir, jobs=1):
    """[render_scene(split, i)] for scenes 0..count-1 of a split, rendered by jobs processes."""
    work = [(split, i, workdir) for i in range(count)]
    out = []
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for rec, *arrays in pool.imap(_render_worker, work, chunksize=16):
            out.append((rec, *(torch.from_numpy(a) for a in arrays)))
            if len(out) % 1000 == 0:
                print(f"  {split}: {len(out)}/{count} scenes", flush=True)
    return out


def train_tokenizer(records, vocab_size):
    texts = [SYSTEM, DESCRIBE, "system", "user", "assistant"]
    for r in records:
        texts.append(r["description"])
        for qa in r["qa"]:
            texts += [qa["question"], qa["answer"]]
    return train_bpe(texts, vocab_size)


def examples(rec):
    yield DESCRIBE, rec["description"]
    for qa in rec["qa"]:
        yield qa["question"], qa["answer"]


def subject(question):
    """(color, shape) class of the one shape a question names, for the auxiliary subject loss:
    (COLORS index, or len(COLORS) when only the shape is named; SHAPES index), or (-100, -100)
    when it names none or two."""
    words = question.rstrip("?").replace(",", "").split()
    shapes = [i for i, w in enumerate(words) if w in synth.SHAPES]
    if len(shapes) != 1:
        return -100, -100
    i = shapes[0]
    color = list(synth.COLORS).index(words[i - 1]) if words[i - 1] in synth.COLORS else len(synth.COLORS)
    return color, synth.SHAPES.index(words[i])


FACTS = (16, 16, len(synth.MOTIONS), 2 + len(synth.COLORS), 16)   # appear, leave, motion, change, at


def facts(o):
    """A shape's ground truth for the auxiliary answer losses: its name (as in record_labels), the
    name's color and shape, its appearance time, its disappearance time (0: never), its motion, its
    change (0 none, 1 grew, 2 + COLORS index: turned that color) and the change's time (0: none)."""
    return [name_class(o), list(synth.COLORS).index(o["color"]), synth.SHAPES.index(o["shape"]), o["appear"],
            o["leave"] or 0, synth.MOTIONS.index(o["motion"]), change_class(o["change"]),
            o["change"]["at"] if o["change"] else 0]


def answer_targets(tok, rec, prompt, answer):
    """Per token of an answer (and its closing <|im_end|>), the facts of the shape the text is
    about, for the auxiliary answer losses: a list of 8-int rows (see facts) — in a description, the shape whose
    sentence the token is in; in the answer to a question that names one shape, that shape; -100
    for <|im_end|>, and everywhere when a question names no shape or two."""
    objects = synth.described_order(rec["scene"])
    offsets = tok.encode(answer + "<|im_end|>").offsets
    if prompt == DESCRIBE:
        about = [answer[:start].count(".") for start, _ in offsets]
    else:
        color, shape = subject(prompt)
        named = [j for j, o in enumerate(objects) if shape >= 0 and o["shape"] == synth.SHAPES[shape]
                 and (color == len(synth.COLORS) or o["color"] == list(synth.COLORS)[color])]
        about = [named[0] if len(named) == 1 and start < len(answer) else len(objects) for start, _ in offsets]
    return [facts(objects[j]) if j < len(objects) else [-100] * 8 for j in about]


def encode(tok, prompt, answer, video_tokens):
    """Token ids and labels for one chat turn, as reelql's Qwen2VLPrompt renders it."""
    head = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            + "<|video_pad|>" * video_tokens + f"<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n")
    head_ids = tok.encode(head).ids
    tail_ids = tok.encode(answer + "<|im_end|>").ids
    return head_ids + tail_ids, [-100] * len(head_ids) + tail_ids


def make_config(tok, args):
    tid = tok.token_to_id
    heads = args.heads
    half = args.hidden // heads // 2
    t = half // 4
    section = [t, (half - t) // 2, half - t - (half - t) // 2]
    return Qwen2VLConfig(
        text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                         num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=2048, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
                         bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|im_end|>"),
                         pad_token_id=tid("<|endoftext|>")),
        vision_config=dict(depth=args.vision_depth, embed_dim=args.vision_dim, num_heads=4, mlp_ratio=4,
                           hidden_size=args.hidden, patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                           in_channels=3, hidden_act="quick_gelu"),
        vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"),
        image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"), tie_word_embeddings=False)


def batches(items, tok, merge, batch_size, rng, answer_rows, per_scene=1):
    """Shuffled batches of examples; each item is (scene data, prompt, answer); answer_rows maps
    (scene id, prompt) to the example's answer_targets. A scene's examples come per_scene at a time, and each
    batch carries every scene it uses once: the vision tower runs once per scene (see forward)."""
    by_scene = {}
    for i, (d, _, _) in enumerate(items):
        by_scene.setdefault(d[0]["id"], []).append(i)
    chunks = []
    for indices in by_scene.values():
        rng.shuffle(indices)
        chunks += [indices[k:k + per_scene] for k in range(0, len(indices), per_scene)]
    rng.shuffle(chunks)
    order = [i for chunk in chunks for i in chunk]
    pad = tok.token_to_id("<|endoftext|>")
    vt = tok.token_to_id("<|video_pad|>")
    for b in range(0, len(order) - batch_size + 1, batch_size):
        chosen = [items[i] for i in order[b:b + batch_size]]
        seqs = [encode(tok, p, a, int(d[2].prod()) // merge) for d, p, a in chosen]
        width = max(len(s) for s, _ in seqs)
        ids = torch.full((len(seqs), width), pad)
        labels = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, lab) in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            labels[i, :len(s)] = torch.tensor(lab)
            mask[i, :len(s)] = 1
        scenes = {d[0]["id"]: d for d, _, _ in chosen}                 # each scene once, in order
        pixels = torch.cat([d[1] for d in scenes.values()]).float()
        grids = torch.stack([d[2] for d in scenes.values()])
        scene_of = [list(scenes).index(d[0]["id"]) for d, _, _ in chosen]
        positions = torch.stack([rope_positions(ids[i], vt, grids[scene_of[i]]) for i in range(len(seqs))], dim=1)  # (3, B, L)
        # Auxiliary targets, in the order the model places video features: per video token, the
        # cell labels (vision, per scene) and its temporal patch index (language model, per example).
        cells = torch.cat([d[3] for d in scenes.values()])
        times = torch.cat([torch.arange(int(d[2][0])).repeat_interleave(int(d[2][1:].prod()) // merge)
                           for d, _, _ in chosen])
        records = torch.cat([d[4] for d, _, _ in chosen])
        # Flat index of each example's last prompt token (whose output is the first answer token).
        last = [i * width + lab.count(-100) - 1 for i, (_, lab) in enumerate(seqs)]
        # The question's subject, at the last prompt token.
        subjects = torch.tensor([(at, *subject(p)) for at, (_, p, _) in zip(last, chosen)])
        events = torch.cat([d[5] for d, _, _ in chosen])
        # The facts of the shape the answer is about, at each position whose output is an answer token.
        about = [[at + k, *row] for at, (d, p, _) in zip(last, chosen)
                 for k, row in enumerate(answer_rows[d[0]["id"], p]) if row[0] >= 0]
        about = torch.tensor(about, dtype=torch.long).view(-1, 9)
        yield dict(input_ids=ids, attention_mask=mask, labels=labels, pixel_values_videos=pixels, video_grid_thw=grids,
                   scene_of=scene_of, mm_token_type_ids=video_types(ids, tok), position_ids=positions), \
            (cells, times, records, events, subjects, about)


def forward(model, batch):
    """The model's output for a batch from batches: the vision tower encodes each scene once and
    every example of that scene gets its features."""
    batch = dict(batch)
    scene_of = batch.pop("scene_of")
    features = model.model.get_video_features(batch.pop("pixel_values_videos"), batch.pop("video_grid_thw"),
                                              return_dict=True).pooler_output
    video = BaseModelOutputWithPooling(pooler_output=tuple(features[k] for k in scene_of))
    return model(**batch, mm_encoder_outputs={"video": video})


class Auxiliary(torch.nn.Module):
    """Training-only heads, dropped from the checkpoint: they give the vision tower a dense signal
    (what color, shape and motion each video token's cell shows, in each of its two frames) and make the
    language model carry each video token's time index, which the text loss alone teaches slowly,
    and, a layer or more later, a record of the shape the token shows (its name, when it appeared,
    how it changed so far) and of the shapes that appeared or disappeared at the token's time (see
    record_labels), so that answering is a look-up of the named shape's record; and, at each
    position whose output is an answer token, which shape the text is about (at the record layer: in a description the model
    commits to one shape before naming it) and that shape's facts (at the last layer; see
    answer_targets).
    They read the merger's output and decoder layers' hidden states through forward hooks."""

    def __init__(self, model, layer, record_layer, maps=6, max_time=16, classes=8):
        super().__init__()
        hidden = model.config.text_config.hidden_size
        self.classes = classes
        self.names = len(synth.COLORS) * len(synth.SHAPES)
        self.split = (self.names + 1, max_time, 2 + len(synth.COLORS), len(synth.COLORS), len(synth.SHAPES),
                      len(synth.MOTIONS))
        self.cells = torch.nn.Linear(hidden, maps * classes)
        self.time = torch.nn.Linear(hidden, max_time)
        self.record = torch.nn.Linear(hidden, sum(self.split))
        self.events = torch.nn.Linear(hidden, 3 * self.names)
        self.subject = torch.nn.Linear(hidden, len(synth.COLORS) + 1 + len(synth.SHAPES))
        self.about_split = (self.names, len(synth.COLORS), len(synth.SHAPES))
        self.about_name = torch.nn.Linear(hidden, sum(self.about_split))
        self.about_facts = torch.nn.Linear(hidden, sum(FACTS))
        self.seen = {}
        model.model.visual.merger.register_forward_hook(lambda m, i, o: self.seen.__setitem__("vision", o))
        layers = model.model.language_model.layers
        layers[layer].register_forward_hook(lambda m, i, o: self.seen.__setitem__("text", o[0] if isinstance(o, tuple) else o))
        layers[record_layer].register_forward_hook(
            lambda m, i, o: self.seen.__setitem__("record", o[0] if isinstance(o, tuple) else o))
        layers[-1].register_forward_hook(lambda m, i, o: self.seen.__setitem__("last", o[0] if isinstance(o, tuple) else o))

    def losses(self, input_ids, video_token, targets):
        """(cell loss, time loss, record loss, subject loss, about loss)."""
        cells, times, records, events, subjects, about = targets
        ce = torch.nn.functional.cross_entropy
        vision = self.cells(self.seen["vision"]).view(-1, self.classes)
        video = input_ids == video_token
        text = self.seen["text"][video]
        state = torch.nn.functional.layer_norm(self.seen["record"][video], self.seen["record"].shape[-1:])
        heads = self.record(state).split(self.split, -1)
        record = (sum(ce(h, records[:, k]) for k, h in enumerate(heads))   # -100: no shape shown
                  + torch.nn.functional.binary_cross_entropy_with_logits(self.events(state), events))
        hidden = self.seen["record"]
        asked = torch.nn.functional.layer_norm(hidden.reshape(-1, hidden.shape[-1])[subjects[:, 0]], hidden.shape[-1:])
        color, shape = self.subject(asked).split((len(synth.COLORS) + 1, len(synth.SHAPES)), -1)
        known = subjects[:, 1] >= 0
        asked_loss = (ce(color[known], subjects[known, 1]) + ce(shape[known], subjects[known, 2])) if known.any() \
            else hidden.sum() * 0
        about_loss = hidden.sum() * 0
        if len(about):
            norm = lambda h: torch.nn.functional.layer_norm(h.reshape(-1, h.shape[-1])[about[:, 0]], h.shape[-1:])
            names = self.about_name(norm(hidden)).split(self.about_split, -1)
            shown = self.about_facts(norm(self.seen["last"])).split(FACTS, -1)
            about_loss = sum(ce(h, about[:, 1 + k]) for k, h in enumerate(names + shown))
        return ce(vision, cells.view(-1)), ce(self.time(text), times), record, asked_loss, about_loss


def rope_positions(ids, video_token, grid, merge=2):
    """M-RoPE position ids (3, L) by the released rule real checkpoints use and reelql implements
    (transformers 5 differs when a video has more temporal groups than merged rows or columns), so
    positions are passed explicitly in training and in the reference."""
    return released_rope_index(ids, grid, {video_token}, merge)


def video_types(ids, tok):
    """transformers 5's mm_token_type_ids: 2 marks video tokens (for the M-RoPE index)."""
    mm = torch.zeros_like(ids, dtype=torch.int32)
    mm[ids == tok.token_to_id("<|video_pad|>")] = 2
    return mm


@torch.no_grad()
def greedy_tokens(model, tok, data, prompt, merge, max_new=48):
    """Greedy generation, with the stop token, recomputing the whole sequence each step with
    explicit released-rule positions (no cache: the model is small)."""
    pix, g = data[1], data[2]
    ids, _ = encode(tok, prompt, "", int(g.prod()) // merge)
    ids = ids[:-len(tok.encode("<|im_end|>").ids)]  # the head only
    stop = {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    vt = tok.token_to_id("<|video_pad|>")
    out = []
    for _ in range(max_new):
        x = torch.tensor([ids + out])
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), mm_token_type_ids=video_types(x, tok),
                       position_ids=rope_positions(x[0], vt, g)[:, None, :], pixel_values_videos=pix.float(),
                       video_grid_thw=g[None], use_cache=False).logits[0, -1]
        out.append(int(logits.argmax()))
        if out[-1] in stop:
            break
    return out


def greedy(model, tok, data, prompt, merge, max_new=48):
    return tok.decode(greedy_tokens(model, tok, data, prompt, merge, max_new), skip_special_tokens=True).strip()


def evaluate(model, tok, val, merge, limit):
    """Exact-match rates on validation scenes: descriptions, answers, and answers per question kind."""
    model.eval()
    desc_ok = 0
    kinds = {}
    for data in val[:limit]:
        rec = data[0]
        desc_ok += greedy(model, tok, data, DESCRIBE, merge) == rec["description"]
        for qa in rec["qa"]:
            k = kinds.setdefault(synth.question_kind(qa["question"]), [0, 0])
            k[0] += greedy(model, tok, data, qa["question"], merge, 12) == qa["answer"]
            k[1] += 1
    model.train()
    right, total = sum(k[0] for k in kinds.values()), sum(k[1] for k in kinds.values())
    return (desc_ok / max(1, min(limit, len(val))), right / max(1, total),
            {q: round(k[0] / k[1], 3) for q, k in sorted(kinds.items())})


def save(model, tok, out):
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    processor().save_pretrained(out)
    shutil.copy(os.path.join(out, "video_preprocessor_config.json"), os.path.join(out, "preprocessor_config.json"))
    template = json.load(open(CHAT_TEMPLATE))["chat_template"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = template
    fast.save_pretrained(out)
    gen = GenerationConfig(bos_token_id=tok.token_to_id("<|endoftext|>"), pad_token_id=tok.token_to_id("<|endoftext|>"),
                           eos_token_id=[tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")],
                           do_sample=False)
    gen.save_pretrained(out)


def main():
    ap = argparse.ArgumentParser(description="Train reelql's demo model.")
    ap.add_argument("--train", type=int, default=16000, help="train scenes")
    ap.add_argument("--validation", type=int, default=40, help="validation scenes")
    ap.add_argument("--steps", type=int, default=13000)
    ap.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--per-scene", type=int, default=4, help="examples of one scene per batch (they share its vision pass)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vision-dim", type=int, default=64)
    ap.add_argument("--vision-depth", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=600)
    ap.add_argument("--vision-lr", type=float, default=3.0, help="the vision tower's learning-rate factor")
    ap.add_argument("--aux-vision", type=float, default=1.0, help="weight of the per-token color/shape loss")
    ap.add_argument("--aux-time", type=float, default=0.3, help="weight of the per-token time-index loss")
    ap.add_argument("--time-layer", type=int, default=1, help="decoder layer whose output carries the time index")
    ap.add_argument("--aux-record", type=float, default=1.0, help="weight of the per-token shape-record loss")
    ap.add_argument("--aux-subject", type=float, default=1.0, help="weight of the question-subject loss")
    ap.add_argument("--aux-about", type=float, default=0.5, help="weight of the losses on the shape an answer is about")
    ap.add_argument("--describe-repeat", type=int, default=2, help="examples per scene of the description prompt (≥ 1)")
    ap.add_argument("--record-layer", type=int, default=2, help="decoder layer whose output carries the shape records")
    ap.add_argument("--init", help="continue training this checkpoint (written by this script) instead of a new model")
    ap.add_argument("--every", type=int, default=250, help="validation loss every this many steps")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--log", default=os.path.join(HERE, "logs", "train.jsonl"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    t0 = time.time()

    with tempfile.TemporaryDirectory() as work:
        train = render_split("train", args.train, work, args.threads)
        val = render_split("validation", args.validation, work, args.threads)
    print(f"rendered {len(train)} + {len(val)} scenes in {time.time() - t0:.0f} s", flush=True)
    if args.init:  # continue from a checkpoint this script wrote (its tokenizer and weights)
        tok = Tokenizer.from_file(os.path.join(args.init, "tokenizer.json"))
        model = Qwen2VLForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        config = model.config
    else:
        tok = train_tokenizer([d[0] for d in train], args.vocab)
        config = make_config(tok, args)
        model = Qwen2VLForConditionalGeneration(config)
    model.train()
    merge = config.vision_config.spatial_merge_size ** 2
    print(f"vocabulary {tok.get_vocab_size()}, parameters {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M", flush=True)

    items = [(d, p, a) for d in train for p, a in examples(d[0])]
    if args.describe_repeat < 1:
        ap.error("--describe-repeat must be at least 1")
    items += [(d, DESCRIBE, d[0]["description"]) for d in train] * (args.describe_repeat - 1)
    val_items = [(d, p, a) for d in val for p, a in examples(d[0])]
    rows = {(d[0]["id"], p): answer_targets(tok, d[0], p, a) for d in train + val for p, a in examples(d[0])}
    aux = Auxiliary(model, args.time_layer, args.record_layer)
    vt = tok.token_to_id("<|video_pad|>")
    vision = [p for n, p in model.named_parameters() if n.startswith("model.visual.")]
    others = [p for n, p in model.named_parameters() if not n.startswith("model.visual.")] + list(aux.parameters())
    opt = torch.optim.AdamW([{"params": others}, {"params": vision, "lr": args.lr * args.vision_lr}],
                            lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    os.makedirs(os.path.dirname(args.log), exist_ok=True)
    log = open(args.log, "w")
    log.write(json.dumps({"args": vars(args), "versions": {"torch": torch.__version__,
                          "transformers": __import__("transformers").__version__}}) + "\n")
    step, start = 0, time.time()
    while step < args.steps:
        for batch, targets in batches(items, tok, merge, args.batch, rng, rows, args.per_scene):
            text_loss = forward(model, batch).loss
            cell_loss, time_loss, record_loss, subject_loss, about_loss = aux.losses(batch["input_ids"], vt, targets)
            loss = (text_loss + args.aux_vision * cell_loss + args.aux_time * time_loss + args.aux_record * record_loss
                    + args.aux_subject * subject_loss + args.aux_about * about_loss)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(aux.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            entry = {"step": step, "loss": round(text_loss.item(), 5), "cell_loss": round(cell_loss.item(), 4),
                     "time_loss": round(time_loss.item(), 4), "record_loss": round(record_loss.item(), 4),
                     "subject_loss": round(subject_loss.item(), 4), "about_loss": round(about_loss.item(), 4), "lr": sched.get_last_lr()[0],
                     "seconds": round(time.time() - start, 1)}
            if step % args.every == 0 or step == args.steps:
                model.eval()
                with torch.no_grad():
                    vl = [forward(model, b).loss.item() for b, _ in batches(val_items, tok, merge, args.batch, random.Random(0), rows)]
                model.train()
                entry["validation_loss"] = round(sum(vl) / max(1, len(vl)), 5)
                print(json.dumps(entry), flush=True)
            log.write(json.dumps(entry) + "\n")
            log.flush()
            out_of_time = args.minutes is not None and time.time() - start > args.minutes * 60
            if step >= args.steps or out_of_time:
                break
        if args.minutes is not None and time.time() - start > args.minutes * 60:
            break
    desc, qa, kinds = evaluate(model, tok, val, merge, limit=args.validation)
    result = {"steps": step, "train_seconds": round(time.time() - start), "validation_description_exact": desc,
              "validation_answer_exact": qa, "validation_answer_exact_by_kind": kinds}
    print(json.dumps(result), flush=True)
    log.write(json.dumps(result) + "\n")
    save(model, tok, args.out)
    print("saved", args.out, flush=True)


if __name__ == "__main__":
    main()
