# A notebook in ten lines: compile a corpus model, run it, read the per-op table, save the roofline.
import os, sys, numpy as np, llmpu
model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("LLMPU_CORPUS", "../shared/corpus"), "models/gpt2-tiny-prefill/model.onnx")
binary = llmpu.compile(model, target="edge", precision="bf16")
ids = np.random.default_rng(0).integers(0, 256, size=(1, 16), dtype=np.int64)
outputs, report = binary.run({"input_ids": ids})
print("logits", outputs["logits"].shape, "next token", int(outputs["logits"][0, -1].argmax()))
print(f"{report.cycles:,} cycles = {report.seconds * 1e6:.1f} µs on {binary.target['name']}")
print(report.ops[["op", "cycles", "hbm_bytes", "flops", "bottleneck", "bound", "roofline_fraction"]].head(8).to_string(max_colwidth=40))
report.plot_roofline("roofline.png")
