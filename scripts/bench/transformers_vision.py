#!/usr/bin/env python3
"""The reference point for `reelql bench vision`: transformers' Qwen2-VL vision tower with the
Qwen2-VL-2B vision config (depth 32, width 1280, 16 heads; random weights) on 8 frames at
448×448 (4096 patches), timed on this machine.
  usage: $(scripts/reference-venv.sh) scripts/bench/transformers_vision.py [bf16|f32]
(torch 2.15.0, transformers 5.24.0, as scripts/reference-venv.sh installs them)"""
import sys
import time

import torch
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

dtype = torch.bfloat16 if (sys.argv[1:] or ["bf16"])[0] == "bf16" else torch.float32
torch.manual_seed(0)
config = Qwen2VLVisionConfig(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=1536)
config._attn_implementation = "sdpa"
model = Qwen2VisionTransformerPretrainedModel(config).eval().to(dtype)
grid = torch.tensor([[4, 32, 32]])
pixels = torch.randn(4096, 3 * 2 * 14 * 14).to(dtype)
with torch.no_grad():
    t0 = time.time()
    model(pixels, grid_thw=grid)
    t = time.time() - t0
print(f"transformers {torch.__version__} vision tower ({dtype}, {torch.get_num_threads()} threads): {t:.2f} s")
