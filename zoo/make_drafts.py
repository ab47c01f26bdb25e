"""Early-exit draft models for speculative decoding: a decoder export cut after its first N layers.

Run by hand (needs only `onnx`; `onnxruntime` to self-check):

    python zoo/make_drafts.py --corpus ../shared/corpus --layers 1 --out zoo/drafts

For every `*-tiny-dyn-{prefill,decode}` pair of the corpus it writes
`<out>/<family>-tiny-dyn-<N>layer-{prefill,decode}/model.onnx`: the same embeddings, first N
decoder layers, final norm and LM head (so the vocabulary and the tokenizer are the target's),
the KV inputs/outputs of the dropped layers removed. The cut is found from the graph, not from a
family's op names: layer `i` is the set of nodes named `.../<h|layers>.<i>/...`, and its residual
output is the output of the last `Add` of layer `i` that a node outside the layer consumes. The
final norm's use of the last layer's residual is rewired to layer N-1's, and everything no output
needs is pruned. With onnxruntime installed, each draft's decode step (past from its prefill of
the first tokens) is checked against its prefill of the whole sequence.
"""

import argparse
import os
import re

import onnx

LAYER = re.compile(r"/(?:h|layers)\.(\d+)/")


def layer_of(node):
    m = LAYER.search(node.name)
    return int(m.group(1)) if m else None


def cut(model, keep):
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    layers = sorted({layer_of(n) for n in g.node if layer_of(n) is not None})
    if keep >= len(layers):
        raise SystemExit(f"the model has {len(layers)} layers; keeping {keep} drops none")

    def residual(i):
        order = {id(n): k for k, n in enumerate(g.node)}
        best = None
        for n in g.node:
            for t in n.input:
                p = producer.get(t)
                if p is not None and layer_of(p) == i and layer_of(n) != i and p.op_type == "Add":
                    if best is None or order[id(p)] > best[0]:
                        best = (order[id(p)], t)
        if best is None:
            raise SystemExit(f"no residual output found for layer {i}")
        return best[1]

    old, new = residual(layers[-1]), residual(keep - 1)
    for n in g.node:
        if layer_of(n) is None:
            for j, t in enumerate(n.input):
                if t == old:
                    n.input[j] = new
    dropped = re.compile(r"\.(\d+)\.(?:key|value)$")

    def kept_io(v):
        m = dropped.search(v.name)
        return m is None or int(m.group(1)) < keep

    outs = [o for o in g.output if kept_io(o)]
    del g.output[:]
    g.output.extend(outs)
    need = {o.name for o in g.output}
    live = []
    for n in reversed(list(g.node)):
        if any(o in need for o in n.output):
            live.append(n)
            need.update(t for t in n.input if t)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    ins = [i for i in g.input if i.name in need]
    del g.input[:]
    g.input.extend(ins)
    inits = [t for t in g.initializer if t.name in need]
    del g.initializer[:]
    g.initializer.extend(inits)
    vis = [v for v in g.value_info if v.name in need]
    del g.value_info[:]
    g.value_info.extend(vis)
    return model


def self_check(prefill, decode, keep):
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        print("  (onnxruntime not installed: not checked)")
        return
    pre = ort.InferenceSession(prefill)
    dec = ort.InferenceSession(decode)
    ids = np.random.default_rng(0).integers(0, 256, (1, 9)).astype(np.int64)

    def feed(s, x, past=0, kv=None):
        f = dict(
            input_ids=x,
            attention_mask=np.ones((1, past + x.shape[1]), np.int64),
            position_ids=np.arange(past, past + x.shape[1])[None].astype(np.int64),
        )
        f.update(kv or {})
        return s.run(None, f)

    full = feed(pre, ids)[0]
    p = feed(pre, ids[:, :8])
    names = [o.name for o in pre.get_outputs()]
    kv = {}
    for i in range(keep):
        for kind in ("key", "value"):
            kv[f"past_key_values.{i}.{kind}"] = p[names.index(f"present.{i}.{kind}")]
    d = feed(dec, ids[:, 8:], past=8, kv=kv)[0]
    diff = float(np.abs(d[:, -1] - full[:, -1]).max())
    print(f"  decode after prefill vs prefill: max |diff| {diff:.2e}")
    assert diff < 1e-4, diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    for family in ("gpt2", "llama"):
        paths = {}
        for kind in ("prefill", "decode"):
            src = os.path.join(a.corpus, "models", f"{family}-tiny-dyn-{kind}", "model.onnx")
            m = cut(onnx.load(src), a.layers)
            onnx.checker.check_model(m)
            d = os.path.join(a.out, f"{family}-tiny-dyn-{a.layers}layer-{kind}")
            os.makedirs(d, exist_ok=True)
            paths[kind] = os.path.join(d, "model.onnx")
            onnx.save(m, paths[kind])
            print(f"{paths[kind]}: {len(m.graph.node)} nodes")
        self_check(paths["prefill"], paths["decode"], a.layers)


if __name__ == "__main__":
    main()
