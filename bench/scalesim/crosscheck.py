#!/usr/bin/env python3
"""Cross-check of the matrix engine's timing against SCALE-Sim v3 (issue 15, item 4).

For every GEMM of the grid (C[M×N] = A[M×K] · B[K×N]) on a 32×32 and a 128×128 array and for each
dataflow SCALE-Sim has (`ws`, `os`, `is`), this runs

- SCALE-Sim v3 (`pip install scalesim`) with memory made free: 1 GiB per SRAM and the CALC
  interface-bandwidth mode (bandwidth estimated, never a stall), so its "Total Cycles" are compute
  cycles only; and
- the emulator (`llmpu run --timing-only`) on a one-instruction program, `mxu.matmul` of the same
  `m, k, n` with its operands already in the scratchpad, on a target whose `matrix.rows`, `cols`
  and `dataflow` are SCALE-Sim's (the rest is the `edge` preset with large on-chip memories). Its
  compute cycles are the run's cycles minus the six `li` and the dispatch before the matmul
  (`latency.scalar` = 1 each), i.e. the matmul's start to its completion.

SCALE-Sim counts the index of the last busy cycle, one less than the emulator's count of cycles.

    # regenerate the committed table (needs scalesim; about 3 minutes):
    python bench/scalesim/crosscheck.py --scalesim --write spec/scalesim-crosscheck.md
    # CI: a subset, SCALE-Sim rerun when importable, else against the committed column:
    python bench/scalesim/crosscheck.py --subset ci [--scalesim] --check spec/scalesim-crosscheck.md

Exits with status 1 when a `ws`/`os`/`is` row is off by more than the tolerance (5%), or when a
rerun differs from the committed table. scalesim 3.0.0 needs numpy < 2.4 (it converts
one-element arrays with `int()`, which numpy 2.4 refuses).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 0.05
PROLOGUE = 7  # six `li` and the matmul's dispatch, one cycle each

# (array, M, K, N): square, skinny M = 1..64, K and N not multiples of the array.
GRID = [
    (32, 64, 64, 64),
    (32, 128, 128, 128),
    (32, 256, 256, 256),
    (32, 1, 256, 256),
    (32, 8, 256, 256),
    (32, 16, 256, 256),
    (32, 32, 256, 256),
    (32, 64, 256, 256),
    (32, 64, 80, 96),
    (32, 100, 200, 300),
    (32, 77, 130, 250),
    (32, 200, 50, 70),
    (128, 128, 128, 128),
    (128, 256, 256, 256),
    (128, 512, 512, 512),
    (128, 1, 512, 512),
    (128, 8, 512, 512),
    (128, 16, 512, 512),
    (128, 32, 512, 512),
    (128, 64, 512, 512),
    (128, 100, 200, 300),
    (128, 300, 500, 700),
    (128, 1000, 130, 250),
    (128, 64, 1000, 1000),
]
# The CI subset: one square, one skinny, one ragged shape per array.
CI = [
    (32, 64, 64, 64),
    (32, 8, 256, 256),
    (32, 64, 80, 96),
    (128, 128, 128, 128),
    (128, 16, 512, 512),
    (128, 100, 200, 300),
]
DATAFLOWS = ["ws", "os", "is"]

SCALESIM_CFG = """[general]
run_name = xc

[architecture_presets]
ArrayHeight: {r}
ArrayWidth: {c}
IfmapSramSzkB: 1048576
FilterSramSzkB: 1048576
OfmapSramSzkB: 1048576
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {df}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def scalesim_cycles(array, m, k, n, df, work):
    """SCALE-Sim's compute cycles ("Total Cycles" of COMPUTE_REPORT.csv) for one GEMM."""
    from scalesim.scale_sim import scalesim  # noqa: PLC0415 (optional dependency)

    d = tempfile.mkdtemp(dir=work)
    cfg, topo, layout = (os.path.join(d, f) for f in ("c.cfg", "topo.csv", "layout.csv"))
    with open(cfg, "w") as f:
        f.write(SCALESIM_CFG.format(r=array, c=array, df=df))
    with open(topo, "w") as f:  # SCALE-Sim's GEMM topology: M, N, K
        f.write(f"Layer, M, N, K,\ng, {m}, {n}, {k},\n")
    with open(layout, "w") as f:
        f.write("Layer,\n")
    out = os.path.join(d, "out")
    with open(os.devnull, "w") as null:
        saved = os.dup(1)
        os.dup2(null.fileno(), 1)  # SCALE-Sim prints its progress on stdout
        try:
            s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                         layout=layout, input_type_gemm=True)
            s.run_scale(top_path=out)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    for root, _, files in os.walk(out):
        if "COMPUTE_REPORT.csv" in files:
            with open(os.path.join(root, "COMPUTE_REPORT.csv")) as f:
                header, row = f.read().strip().splitlines()[:2]
            cols = [h.strip() for h in header.split(",")]
            vals = [v.strip() for v in row.split(",")]
            return int(float(vals[cols.index("Total Cycles")]))
    raise RuntimeError(f"SCALE-Sim wrote no COMPUTE_REPORT.csv for {m}x{k}x{n} {df}")


def target_toml(llmpu, array, df):
    """The `edge` preset with SCALE-Sim's array and dataflow and large on-chip memories."""
    text = subprocess.run([llmpu, "targets", "edge"], check=True, capture_output=True,
                          text=True).stdout
    text = re.sub(r'(?m)^name = .*$', f'name = "scalesim-{array}-{df}"', text)
    text = re.sub(r'(?m)^rows = \d+$', f"rows = {array}", text)
    text = re.sub(r'(?m)^cols = \d+$', f"cols = {array}\ndataflow = \"{df}\"", text)
    text = re.sub(r'(?m)^(\[sram\]\nsize_bytes =) \d+$', r"\1 268435456", text)
    text = re.sub(r'(?m)^(\[accumulator\]\nsize_bytes =) \d+$', r"\1 268435456", text)
    assert f'dataflow = "{df}"' in text and "268435456" in text, text
    return text


def emulator_cycles(llmpu, array, m, k, n, df, work):
    """The matmul's start-to-completion cycles in the emulator."""
    t = os.path.join(work, f"t-{array}-{df}.toml")
    if not os.path.exists(t):
        with open(t, "w") as f:
            f.write(target_toml(llmpu, array, df))
    prog = os.path.join(work, f"mm-{m}-{k}-{n}.s")
    b = (m * k * 2 + 63) // 64 * 64
    with open(prog, "w") as f:
        f.write(
            f".core 0\n    li r1, 0\n    li r2, 0\n    li r3, {b}\n    li r4, {k}\n"
            f"    li r5, {n}\n    li r6, {n}\n"
            f"    mxu.matmul r1, r2, r3, {m}, {k}, {n}, r4, r5, r6, bf16, set\n    halt\n"
        )
    out = subprocess.run([llmpu, "run", prog, "--timing-only", "--target", t, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["cycles"] - PROLOGUE


def read_table(path):
    """`{(array, df, m, k, n): scalesim_cycles}` from a committed table."""
    rows = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 7 and cells[0].isdigit() and cells[1] in DATAFLOWS:
                a, df, m, k, n, ss = cells[:6]
                rows[(int(a), df, int(m), int(k), int(n))] = int(ss.replace(",", ""))
    return rows


def markdown(results, wsd):
    o = [
        "# The matrix engine against SCALE-Sim v3",
        "",
        "<!-- Generated by bench/scalesim/crosscheck.py --scalesim --write "
        "spec/scalesim-crosscheck.md; do not edit. -->",
        "",
        "Compute cycles of one GEMM `C[M×N] = A[M×K]·B[K×N]` (bf16) on one core, memory made free "
        "(SCALE-Sim: 1 GiB SRAMs, CALC bandwidth mode, no stalls; emulator: operands already in "
        "the scratchpad, one `mxu.matmul`). The emulator's target is `edge` with `matrix.rows` = "
        "`matrix.cols` = the array and `matrix.dataflow` = SCALE-Sim's dataflow. SCALE-Sim counts "
        "the index of the last busy cycle, one less than the emulator. Formulas: "
        "`spec/cost-model.md`, \"Dataflows\".",
        "",
        "## Summary",
        "",
        "| array | dataflow | shapes | max error | mean error |",
        "|---|---|---|---|---|",
    ]
    for array in sorted({r[0] for r in results}):
        for df in DATAFLOWS:
            errs = [abs(r[7]) for r in results if r[0] == array and r[1] == df]
            if errs:
                o.append(f"| {array}×{array} | {df} | {len(errs)} | {max(errs) * 100:.3f}% | "
                         f"{sum(errs) / len(errs) * 100:.3f}% |")
    o += [
        "",
        "## Every shape",
        "",
        "| array | dataflow | M | K | N | SCALE-Sim | emulator | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a, df, m, k, n, ss, emu, err in results:
        o.append(f"| {a} | {df} | {m} | {k} | {n} | {ss:,} | {emu:,} | {err * 100:+.3f}% |")
    if wsd:
        o += [
            "",
            "## The default `ws-double` against SCALE-Sim's `ws`",
            "",
            "Not a cross-check: SCALE-Sim has no double-buffered weight-stationary array. The "
            "default overlaps each weight load with the previous fold's stream and pays fill and "
            "drain once per instruction: for `M ≥ R` it saves `2R + C − 2` cycles per fold (less "
            "the `R + C` latency once); for `M < R` it charges the weight load (`R`) per fold "
            "where `ws` charges `M + 2R + C − 2`.",
            "",
            "| array | M | K | N | SCALE-Sim ws | emulator ws-double | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for a, m, k, n, ss, emu in wsd:
            o.append(f"| {a} | {m} | {k} | {n} | {ss:,} | {emu:,} | {emu / ss:.3f} |")
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scalesim", action="store_true", help="run SCALE-Sim (else: --check's table)")
    ap.add_argument("--subset", choices=["all", "ci"], default="all")
    ap.add_argument("--write", help="write the markdown table here")
    ap.add_argument("--check", help="committed table: its SCALE-Sim column is the reference "
                    "without --scalesim; with it, a rerun must reproduce the column")
    ap.add_argument("--llmpu", help="the llmpu binary (default: cargo build --release, then "
                    "target/release/llmpu)")
    a = ap.parse_args()
    if not a.scalesim and not a.check:
        ap.error("give --scalesim or --check TABLE")
    llmpu = a.llmpu
    if not llmpu:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO, check=True)
        llmpu = os.path.join(REPO, "target", "release", "llmpu")
    committed = read_table(a.check) if a.check else {}
    grid = GRID if a.subset == "all" else CI
    results, wsd, bad = [], [], []
    with tempfile.TemporaryDirectory() as work:
        for array, m, k, n in grid:
            for df in DATAFLOWS:
                key = (array, df, m, k, n)
                if a.scalesim:
                    ss = scalesim_cycles(array, m, k, n, df, work)
                    if key in committed and committed[key] != ss:
                        bad.append(f"{key}: SCALE-Sim gave {ss}, the table has {committed[key]}")
                elif key in committed:
                    ss = committed[key]
                else:
                    sys.exit(f"{key} is not in {a.check}")
                emu = emulator_cycles(llmpu, array, m, k, n, df, work)
                err = (emu - ss) / ss
                results.append((array, df, m, k, n, ss, emu, err))
                flag = "" if abs(err) <= TOLERANCE else "   <-- beyond 5%"
                print(f"{array:>4} {df:<3} {m:>5}x{k:>5}x{n:>5}  scalesim {ss:>9}  "
                      f"emulator {emu:>9}  {err * 100:+7.3f}%{flag}", flush=True)
                if flag:
                    bad.append(f"{key}: emulator {emu} vs SCALE-Sim {ss} ({err * 100:+.2f}%)")
                if df == "ws":
                    wsd.append((array, m, k, n, ss,
                                emulator_cycles(llmpu, array, m, k, n, "ws-double", work)))
    for array in sorted({r[0] for r in results}):
        for df in DATAFLOWS:
            errs = [abs(r[7]) for r in results if r[0] == array and r[1] == df]
            print(f"{array}x{array} {df}: max error {max(errs) * 100:.3f}% over {len(errs)} shapes")
    if a.write:
        with open(a.write, "w") as f:
            f.write(markdown(results, wsd))
        print(f"wrote {a.write}")
    if bad:
        print("\n".join(["FAILED:"] + bad))
        sys.exit(1)
    print(f"all {len(results)} rows within {TOLERANCE:.0%} of SCALE-Sim")


if __name__ == "__main__":
    main()
