"""LLMPU from Python: compile ONNX transformers for the LLMPU accelerator, run them on the bundled
emulator, and read the cost report as a pandas DataFrame and a roofline plot.

    import llmpu, numpy as np
    binary = llmpu.compile("model.onnx", target="edge", precision="bf16", dims={"sequence_length": 16})
    outputs, report = binary.run({"input_ids": np.zeros((1, 16), np.int64)})
    report.ops                       # one row per op: cycles per unit, bytes, FLOPs, bottleneck, ...
    report.plot_roofline("roofline.png")

The work is done by the Rust crates of the LLMPU workspace (``llmpu._native``); every error they
report is raised as :class:`LlmpuError` with the Rust error text.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _native
from ._native import LlmpuError

__all__ = [
    "Binary",
    "LlmpuError",
    "Report",
    "compare",
    "compile",
    "ir_after",
    "load",
    "passes",
    "target",
    "targets",
]

Model = Union[str, "os.PathLike[str]", bytes, Any]
TargetSpec = Union[str, "os.PathLike[str]", Mapping[str, Any]]


def _model_arg(model: Model) -> Union[str, bytes]:
    """A path, the bytes of a serialized ModelProto, or an ``onnx.ModelProto``."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    raise TypeError(
        f"model: expected a path, bytes or an onnx.ModelProto, got {type(model).__name__}"
    )


def _target_arg(target: TargetSpec) -> str:
    """A preset name, a ``.toml`` file, or a target dict (as :func:`target` returns it)."""
    if isinstance(target, Mapping):
        return json.dumps(dict(target))
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    raise TypeError(f"target: expected a name, a .toml path or a dict, got {type(target).__name__}")


def _dims_arg(dims: Optional[Mapping[str, int]]) -> Dict[str, int]:
    return {str(k): int(v) for k, v in (dims or {}).items()}


def compile(
    model: Model,
    target: TargetSpec = "edge",
    precision: str = "bf16",
    dims: Optional[Mapping[str, int]] = None,
) -> "Binary":
    """Compiles an ONNX model (path, serialized bytes or ``onnx.ModelProto``) to an LLMPU binary.

    ``target`` is a preset name (see :func:`targets`), a ``.toml`` file or a target dict;
    ``precision`` is ``"bf16"`` (bf16 storage, fp32 accumulation) or ``"fp32"``; ``dims`` binds
    the model's symbolic dimensions, e.g. ``{"batch_size": 1, "sequence_length": 16}``.
    """
    native = _native.compile(
        _model_arg(model), _target_arg(target), precision, _dims_arg(dims)
    )
    return Binary(native, precision)


def ir_after(
    model: Model,
    pass_name: str,
    target: TargetSpec = "edge",
    precision: str = "bf16",
    dims: Optional[Mapping[str, int]] = None,
) -> str:
    """The IR text (MLIR generic syntax) after ``pass_name``: ``"import"`` or any pass of
    :func:`passes` (what ``llmpu compile --print-ir-after=PASS`` prints)."""
    return _native.ir_after(
        _model_arg(model), pass_name, _target_arg(target), precision, _dims_arg(dims)
    )


def passes() -> list:
    """The pass names :func:`ir_after` accepts, in pipeline order (``"import"`` first)."""
    return list(_native.passes())


def target(spec: TargetSpec = "edge") -> Dict[str, Any]:
    """A target (preset name, ``.toml`` file or dict) as a dict with every key of the target
    TOML schema; edit it and pass it back as ``target=`` (it is validated then)."""
    return json.loads(_native.target_json(_target_arg(spec)))


def targets() -> Dict[str, Dict[str, Any]]:
    """The built-in targets, by name, as dicts (see :func:`target`)."""
    return {name: target(name) for name in _native.preset_names()}


def load(path: Union[str, "os.PathLike[str]"], precision: str = "bf16") -> "Binary":
    """Reads a binary written by :meth:`Binary.save` or ``llmpu compile``."""
    return Binary(_native.load(os.fspath(path)), precision)


def compare(
    name: str, got: np.ndarray, expected: np.ndarray, precision: str = "bf16"
) -> Dict[str, Any]:
    """Compares an output with its reference under the precision's tolerance — the rule the CLI
    uses (``fp32``: ~1e-5 relative; ``bf16``: 2e-2 relative and absolute, cosine >= 0.999).
    Returns ``pass``, ``max_abs``, ``max_rel``, ``cosine``, ``mismatches``, ``tolerance``, ``text``."""
    return json.loads(_native.compare(name, np.asarray(got), np.asarray(expected), precision))


class Binary:
    """A compiled program: run it on the emulator, save it, inspect its I/O."""

    def __init__(self, native: "_native.Binary", precision: str = "bf16") -> None:
        self._native = native
        self.precision = precision

    def run(
        self, inputs: Optional[Mapping[str, np.ndarray]] = None, timing_only: bool = False
    ) -> Tuple[Dict[str, np.ndarray], "Report"]:
        """Runs on the emulator: ``(outputs by name, report)``. ``timing_only`` skips the
        arithmetic (same cycles; no outputs; inputs may be omitted)."""
        arrays = {str(k): np.asarray(v) for k, v in (inputs or {}).items()}
        outputs, report = self._native.run(arrays, timing_only)
        return dict(outputs), Report(report)

    @property
    def inputs(self) -> list:
        """``(name, numpy dtype, shape)`` of every input."""
        return [(n, d, tuple(s)) for n, d, s in self._native.inputs]

    @property
    def outputs(self) -> list:
        """``(name, numpy dtype, shape)`` of every output."""
        return [(n, d, tuple(s)) for n, d, s in self._native.outputs]

    @property
    def target(self) -> Dict[str, Any]:
        """The target the binary was compiled for, as a dict."""
        return json.loads(self._native.target_json())

    @property
    def instructions(self) -> list:
        """Instructions per core."""
        return list(self._native.instructions)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the binary (``llmpu run`` reads it)."""
        self._native.save(os.fspath(path))

    def __repr__(self) -> str:
        return repr(self._native)


_OP_COLUMNS = [
    "op", "cycles", "scalar_cycles", "dma_cycles", "mxu_cycles", "vpu_cycles", "instructions",
    "hbm_bytes", "macs", "vector_ops", "flops", "intensity", "flops_per_second", "bottleneck",
    "bound", "roofline_fraction", "first_start", "last_end",
]


class Report:
    """The cost report of a run: totals, the per-op table and the roofline."""

    def __init__(self, native: "_native.Report") -> None:
        self._native = native

    @property
    def cycles(self) -> int:
        """The run's length in core clock cycles."""
        return self._native.cycles

    @property
    def seconds(self) -> float:
        """The run's length at the target's clock."""
        return self._native.seconds

    def to_dict(self) -> Dict[str, Any]:
        """Every figure (the JSON of ``llmpu run --report-json``)."""
        return json.loads(self._native.to_json())

    def html(self, title: str = "LLMPU run") -> str:
        """The self-contained HTML report of ``llmpu run --report`` (without the timeline)."""
        return self._native.html(title)

    def __str__(self) -> str:
        return self._native.render()

    def __repr__(self) -> str:
        return f"<llmpu.Report cycles={self.cycles} seconds={self.seconds:.3e}>"

    @property
    def units(self):
        """One row per core and unit: busy cycles, busy fraction of the run, instructions."""
        import pandas as pd

        rows = [
            {"core": c["core"], "unit": unit, **figures}
            for c in self.to_dict()["cores"]
            for unit, figures in c["units"].items()
        ]
        return pd.DataFrame(
            rows, columns=["core", "unit", "busy_cycles", "busy_fraction", "instructions"]
        )

    @property
    def ops(self):
        """One row per op (ONNX node, or fused nodes joined by ``+``), busiest first: busy
        cycles per unit (``scalar/dma/mxu/vpu_cycles``) and of the bottleneck (``cycles``),
        instructions, HBM bytes, MACs, vector ops, FLOPs (2·MACs + vector ops), intensity
        (FLOP per HBM byte; NaN without HBM traffic), achieved FLOP/s, bottleneck unit, bound
        (memory / compute / control), fraction of the roofline and the op's span in cycles."""
        import pandas as pd

        rows = json.loads(self._native.op_rows_json())
        df = pd.DataFrame(rows, columns=_OP_COLUMNS)
        df["intensity"] = df["intensity"].astype(float)
        return df

    def plot_roofline(self, path: Union[str, "os.PathLike[str]", None] = None, ax=None):
        """A log-log roofline: each op at (intensity, achieved FLOP/s), coloured by its bound,
        under the target's bandwidth and compute roofs, the three busiest ops labelled. Ops
        without HBM traffic sit at the right edge (triangles); ops without FLOPs (pure data
        movement) cannot be placed and are counted in the legend. Saves to ``path`` when given;
        returns the matplotlib Figure."""
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        ops = self.ops
        peak, bw = self._native.roofs()
        if ax is None:
            fig = Figure(figsize=(8, 5.5), dpi=120)
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        ridge = peak / bw
        placed = ops[ops["flops"] > 0]
        known = placed["intensity"].dropna()
        lo = min([ridge / 1e2] + list(known / 2))
        hi = max([ridge * 1e2] + list(known * 2))
        floor = min([peak / 1e3] + list(placed["flops_per_second"] / 3))
        xs = np.geomspace(lo, hi, 200)
        ax.plot(xs, np.minimum(peak, bw * xs), color="black", lw=1.5,
                label=f"roofline ({bw / 1e9:.0f} GB/s, {peak / 1e12:.2f} TFLOP/s)")
        ax.axvline(ridge, color="grey", ls=":", lw=1, label=f"ridge point ({ridge:.1f} FLOP/B)")
        colors = {"memory": "tab:blue", "compute": "tab:red", "control": "tab:green"}
        for bound, color in colors.items():
            sel = placed[placed["bound"] == bound]
            if sel.empty:
                continue
            inner = sel[sel["intensity"].notna()]
            edge = sel[sel["intensity"].isna()]
            ax.scatter(inner["intensity"], inner["flops_per_second"], s=36, color=color,
                       alpha=0.8, label=f"{bound}-bound ops ({len(sel)})")
            if not edge.empty:
                ax.scatter(np.full(len(edge), hi), edge["flops_per_second"], s=48, marker=">",
                           color=color, clip_on=False,
                           label=f"{bound}-bound, no HBM traffic ({len(edge)})")
        seen = set()
        for _, row in placed[placed["intensity"].notna()].head(3).iterrows():
            key = (round(row["intensity"], 6), round(row["flops_per_second"], -3))
            if key in seen:
                continue
            seen.add(key)
            nodes = str(row["op"]).split("+")
            label = "/".join(nodes[0].strip("/").split("/")[-3:])
            if len(nodes) > 1:
                label += f" (+{len(nodes) - 1})"
            ax.annotate(label, (row["intensity"], row["flops_per_second"]),
                        textcoords="offset points", xytext=(-30, 14), ha="right", fontsize=7,
                        arrowprops=dict(arrowstyle="-", lw=0.5, color="grey"))
        handles, labels = ax.get_legend_handles_labels()
        unplaced = int((ops["flops"] == 0).sum())
        if unplaced:
            handles.append(Line2D([], [], ls="none"))
            labels.append(f"{unplaced} ops without FLOPs (data movement) not placed")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(floor, peak * 3)
        ax.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
        ax.set_ylabel("achieved FLOP/s (over the op's bottleneck time)")
        ax.set_title(f"Roofline: {len(ops)} ops, {self.cycles:,} cycles")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(handles, labels, loc="lower right", fontsize=7)
        if path is not None:
            fig.savefig(os.fspath(path), bbox_inches="tight")
        return fig
