#!/usr/bin/env python3
"""The reference point for `reelql bench vision`: transformers' vision tower of one family with
its smallest release's vision config (random weights) on 8 frames at 448×448, timed on this
machine. The configs are those `reelql bench vision --family` uses (Sources/reelql/BenchFamily.swift):
  qwen2_vl    Qwen2-VL-2B:   depth 32, embed 1280, 16 heads, mlp_ratio 4, hidden 1536 (4096 patches)
  qwen2_5_vl  Qwen2.5-VL-3B: depth 32, hidden 1280, 16 heads, SwiGLU 3420, out 2048, window 112,
                             full attention in blocks 7, 15, 23, 31 (4096 patches)
  qwen3_vl    Qwen3-VL-2B:   depth 24, hidden 1024, 16 heads, MLP 4096 (gelu_pytorch_tanh), out 2048,
                             2304 position embeddings, DeepStack 5, 11, 17, patch 16 (3136 patches)
  usage: $(scripts/reference-venv.sh) scripts/bench/transformers_vision.py [bf16|f32] [--family F] [--runs N]
(torch 2.15.0, transformers 5.24.0, as scripts/reference-venv.sh installs them)"""
import argparse
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("dtype", nargs="?", default="bf16", choices=["bf16", "f32"])
parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
parser.add_argument("--runs", type=int, default=1, help="timed runs after the first (the median is printed); 0: the first only")
args = parser.parse_args()
dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
torch.manual_seed(0)

if args.family == "qwen2_vl":
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    config = Qwen2VLVisionConfig(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=1536)
    tower, patch = Qwen2VisionTransformerPretrainedModel, 14
elif args.family == "qwen2_5_vl":
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    config = Qwen2_5_VLVisionConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, hidden_act="silu",
                                    out_hidden_size=2048, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                                    window_size=112, tokens_per_second=2, fullatt_block_indexes=[7, 15, 23, 31])
    tower, patch = Qwen2_5_VisionTransformerPretrainedModel, 14
else:
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel
    config = Qwen3VLVisionConfig(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                                 hidden_act="gelu_pytorch_tanh", out_hidden_size=2048, patch_size=16, spatial_merge_size=2,
                                 temporal_patch_size=2, num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17])
    tower, patch = Qwen3VLVisionModel, 16
config._attn_implementation = "sdpa"
model = tower(config).eval().to(dtype)
side = 448 // (2 * patch) * 2  # patches per side
grid = torch.tensor([[4, side, side]])
pixels = torch.randn(4 * side * side, 3 * 2 * patch * patch).to(dtype)
times = []
with torch.no_grad():
    for _ in range(1 + args.runs):
        t0 = time.time()
        model(pixels, grid_thw=grid)
        times.append(time.time() - t0)
rest = sorted(times[1:])
median = f", median of {len(rest)} more {rest[len(rest) // 2]:.2f} s" if rest else ""
print(f"transformers {torch.__version__} {args.family} vision tower ({dtype}, {torch.get_num_threads()} threads, "
      f"{4 * side * side} patches): first {times[0]:.2f} s{median}")
