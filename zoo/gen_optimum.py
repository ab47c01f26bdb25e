#!/usr/bin/env python3
"""Model zoo, Hugging Face Optimum exports: one decoder model for prefill and decode.

Optimum (`optimum-onnx`, `optimum-cli export onnx --task text-generation-with-past`) writes a
single `model.onnx` whose past inputs may be empty: the prefill runs it with a past of length 0,
every decode step with the cache so far. Its dims include the expression
`past_sequence_length + sequence_length`, and its attention is torch's SDPA export (Q and K each
scaled by the fourth root of 1/d, a NaN guard after the softmax). Run by hand (not by CI) with the
pins of zoo/requirements-optimum.txt (Optimum needs transformers < 4.58, so not the main zoo's):

    python3 -m venv /tmp/optimum && /tmp/optimum/bin/pip install -r zoo/requirements-optimum.txt
    /tmp/optimum/bin/python zoo/gen_optimum.py [--only llama] [--out zoo]

`--legacy` writes Optimum 1.x's merged decoder instead (`decoder_model_merged.onnx`: an `If` on the
input `use_cache_branch` between the graphs without and with a past; no `position_ids`), as
`<family>-tiny-optimum-merged`, with the pins of zoo/requirements-optimum-legacy.txt:

    python3 -m venv /tmp/optold && /tmp/optold/bin/pip install -r zoo/requirements-optimum-legacy.txt
    /tmp/optold/bin/python zoo/gen_optimum.py --legacy --only llama

Writes, for each family (hidden 64, 4 heads of 16, 2 layers, vocabulary 256; weights as the main
zoo draws them, seed 1234, gain in GAIN):

- `models/<family>-tiny-optimum/`: the model, `test_data_set_0` (batch 1, an 8-token prompt,
  empty past) and `test_data_set_1` (batch 1, one token after a 16-token past computed by the
  model itself), onnxruntime references checked against PyTorch, and `meta.json`;
- `generate/<family>-tiny-optimum-generate.json`: an 8-token prompt and 24 greedy ids from
  onnxruntime (the model with an empty past, then 23 steps with its presents), checked token for
  token against PyTorch's greedy decoding; `onnx_models_used` names the model as both prefill
  and decode.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import numpy_helper

SEED = 1234
GAIN = {"llama": 1.0, "gpt2": 1.5}


def config(family):
    if family == "llama":
        return transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            num_hidden_layers=2, vocab_size=256, max_position_embeddings=128,
            bos_token_id=0, eos_token_id=0, pad_token_id=1,
        ), transformers.LlamaForCausalLM
    return transformers.GPT2Config(
        n_embd=64, n_head=4, n_layer=2, vocab_size=256, n_positions=128, bos_token_id=0, eos_token_id=0,
    ), transformers.GPT2LMHeadModel


def build(family):
    cfg, cls = config(family)
    torch.manual_seed(SEED)
    model = cls(cfg)
    g = torch.Generator().manual_seed(SEED)
    gpt2 = family == "gpt2"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[-2] if gpt2 and "h." in name else p.shape[-1]  # GPT-2's Conv1D is [in, out]
                p.copy_(GAIN[family] * torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so)


def feeds(sess, ids, past, total):
    """Inputs for `ids` after a past of `total` tokens (`past`: name → array, or empty)."""
    ins = {i.name: i for i in sess.get_inputs()}
    n = ids.shape[1]
    f = {"input_ids": ids, "attention_mask": np.ones((1, total + n), np.int64)}
    if "position_ids" in ins:
        f["position_ids"] = np.arange(total, total + n, dtype=np.int64)[None]
    if "use_cache_branch" in ins:
        f["use_cache_branch"] = np.array([total > 0])
    for name, i in ins.items():
        if name.startswith("past_key_values"):
            f[name] = past.get(name, np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32))
    return f


def run(sess, f):
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, f)
    past = {n.replace("present", "past_key_values"): v for n, v in zip(names, outs) if n.startswith("present")}
    return names, outs, past


def write_set(d, k, f, names, outs, order):
    s = os.path.join(d, f"test_data_set_{k}")
    os.makedirs(s, exist_ok=True)
    for i, n in enumerate(order):
        with open(os.path.join(s, f"input_{i}.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(f[n], n).SerializeToString())
    for i, (n, v) in enumerate(zip(names, outs)):
        with open(os.path.join(s, f"output_{i}.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(v, n).SerializeToString())


def torch_logits(model, seq):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(seq)).logits.numpy()


def versions():
    import optimum.version

    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
        "onnxruntime": ort.__version__, "numpy": np.__version__, "optimum": optimum.version.__version__,
    }


def export(family, out_dir, legacy):
    model = build(family)
    name = f"{family}-tiny-optimum" + ("-merged" if legacy else "")
    d = os.path.join(out_dir, "models", name)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(os.path.join(tmp, "hf"))
        subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "optimum-cli"), "export", "onnx", "--model",
             os.path.join(tmp, "hf"), "--task", "text-generation-with-past", os.path.join(tmp, "onnx")]
            + (["--legacy"] if legacy else []),
            check=True,
        )
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        src = "decoder_model_merged.onnx" if legacy else "model.onnx"
        shutil.copy(os.path.join(tmp, "onnx", src), os.path.join(d, "model.onnx"))
    path = os.path.join(d, "model.onnx")
    sess = session(path)
    order = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(SEED)
    checks = {}
    # Set 0: the prefill (empty past); set 1: one token after a 16-token past.
    prompt = rng.integers(2, 256, size=(1, 8)).astype(np.int64)
    f0 = feeds(sess, prompt, {}, 0)
    names, outs, _ = run(sess, f0)
    write_set(d, 0, f0, names, outs, order)
    checks["test_data_set_0"] = float(np.abs(outs[0] - torch_logits(model, prompt)).max())
    ctx = rng.integers(2, 256, size=(1, 17)).astype(np.int64)
    _, _, past = run(sess, feeds(sess, ctx[:, :16], {}, 0))
    f1 = feeds(sess, ctx[:, 16:], past, 16)
    names, outs, _ = run(sess, f1)
    write_set(d, 1, f1, names, outs, order)
    checks["test_data_set_1"] = float(np.abs(outs[0][:, -1] - torch_logits(model, ctx)[:, -1]).max())
    for k, v in checks.items():
        if v > 1e-3:
            raise RuntimeError(f"{name} {k}: onnxruntime logits differ from PyTorch's by {v:.3g}")
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    meta = {
        "name": name,
        "exporter": "optimum-cli export onnx --task text-generation-with-past" + (" --legacy" if legacy else ""),
        "exporter_kind": "optimum", "inputs": order, "outputs": names, "ops": ops,
        "checks": {k: {"max_abs_logits_diff_vs_torch": v} for k, v in checks.items()},
        "config": model.config.to_dict(), "seed": SEED, "gain": GAIN[family], "versions": versions(),
    }
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1, default=str)
    # Greedy reference: onnxruntime with the cache against PyTorch over the growing sequence.
    seq = rng.integers(2, 256, size=(1, 8)).astype(np.int64)
    ids, past, total, x = [], {}, 0, seq
    for _ in range(24):
        _, outs, past = run(sess, feeds(sess, x, past, total))
        total += x.shape[1]
        ids.append(int(outs[0][0, -1].argmax()))
        x = np.array([[ids[-1]]], np.int64)
    torch_ids, s = [], seq
    for _ in range(24):
        torch_ids.append(int(torch_logits(model, s)[0, -1].argmax()))
        s = np.concatenate([s, [[torch_ids[-1]]]], 1)
    if ids != torch_ids:
        raise RuntimeError(f"{name}: onnxruntime greedy ids {ids} differ from PyTorch's {torch_ids}")
    rel = os.path.relpath(path, os.path.join(out_dir, "models"))
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    ref = {
        "arch": family, "exporter": meta["exporter"], "prompt_ids": seq[0].tolist(), "generated_ids": ids,
        "torch_greedy_ids": torch_ids, "ids_match_torch": True,
        "onnx_models_used": {k: {"path": rel, "sha256": sha} for k in ("prefill", "decode")},
        "procedure": "greedy: the model with an empty past over the prompt, then 23 steps of one token "
        "with the presents as past; onnxruntime CPU, ORT_DISABLE_ALL, 1 thread. torch: full forward over "
        "the growing sequence, argmax each step.",
        "versions": meta["versions"],
    }
    os.makedirs(os.path.join(out_dir, "generate"), exist_ok=True)
    with open(os.path.join(out_dir, "generate", f"{name}-generate.json"), "w") as fh:
        json.dump(ref, fh, indent=2)
    print(f"{name}: written under {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(GAIN), help="families (default: all)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--legacy", action="store_true",
                    help="the merged decoder (`--legacy`, optimum 1.x; pins in requirements-optimum-legacy.txt)")
    a = ap.parse_args()
    for family in a.only or sorted(GAIN):
        export(family, a.out, a.legacy)


if __name__ == "__main__":
    main()
