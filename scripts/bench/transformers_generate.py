#!/usr/bin/env python3
"""The reference point for `reelql bench generate`: transformers' language model of one family
with its smallest release's text config (random bf16 weights, embeddings tied): prefill of a
1,024-token prompt (inputs_embeds, as after the vision tower; Qwen3-VL with its DeepStack
features at 1,000 video positions), then greedy decoding with the KV cache, timed on this machine.
The configs are those `reelql bench generate --family` uses (Sources/reelql/BenchFamily.swift):
  qwen2_vl    Qwen2-VL-2B:   28 layers, hidden 1536, MLP 8960, 12 heads / 2 KV heads, vocab 151936
  qwen2_5_vl  Qwen2.5-VL-3B: 36 layers, hidden 2048, MLP 11008, 16 heads / 2 KV heads, vocab 151936
  qwen3_vl    Qwen3-VL-2B:   28 layers, hidden 2048, MLP 6144, 16 heads / 8 KV heads, head_dim 128,
                             q/k norms, interleaved M-RoPE [24, 20, 20], θ 5e6, vocab 151936
  usage: $(scripts/reference-venv.sh) scripts/bench/transformers_generate.py [--family F] [--tokens N]
(torch 2.15.0, transformers 5.24.0, as scripts/reference-venv.sh installs them)"""
import argparse
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
parser.add_argument("--tokens", type=int, default=32, help="tokens to decode")
parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens to prefill")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)  # build in bf16: no f32 copy of the weights

common = dict(vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True)
if args.family == "qwen2_vl":
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig as Config
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel as Model
    config = Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                    num_key_value_heads=2, max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}, **common)
elif args.family == "qwen2_5_vl":
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig as Config
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel as Model
    config = Config(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                    num_key_value_heads=2, max_position_embeddings=128000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}, **common)
else:
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig as Config
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel as Model
    config = Config(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                     "mrope_interleaved": True}, **common)
config._attn_implementation = "sdpa"
from transformers import DynamicCache

t0 = time.time()
model = Model(config).eval()
print(f"built {args.family} language model ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters) in {time.time() - t0:.1f} s")
head = model.embed_tokens.weight  # tied

T = args.prompt
embeds = torch.randn(1, T, config.hidden_size) * 0.02
extra = {}
if args.family == "qwen3_vl":
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, 12:1012] = True
    extra = dict(visual_pos_masks=mask, deepstack_visual_embeds=[torch.randn(1000, config.hidden_size) * 0.02 for _ in range(3)])

def prefill():
    cache = DynamicCache(config=config)
    out = model(inputs_embeds=embeds, cache=cache, use_cache=True, **extra)
    return out.last_hidden_state, cache

with torch.no_grad():
    prefill()  # warm-up
    t0 = time.time()
    hidden, cache = prefill()
    tp = time.time() - t0
    print(f"transformers {torch.__version__} prefill ({torch.get_num_threads()} threads): {T} tokens in {tp:.2f} s = {T / tp:.0f} tokens/s")
    nxt = int((hidden[0, -1] @ head.T).argmax())
    t0 = time.time()
    for _ in range(args.tokens):
        out = model(inputs_embeds=model.embed_tokens(torch.tensor([[nxt]])), cache=cache, use_cache=True)
        nxt = int((out.last_hidden_state[0, -1] @ head.T).argmax())
    td = time.time() - t0
    print(f"transformers decode: {args.tokens} tokens in {td:.2f} s = {args.tokens / td:.2f} tokens/s")
