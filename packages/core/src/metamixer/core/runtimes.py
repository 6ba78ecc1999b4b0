"""Deployment targets beyond PyTorch: ONNX Runtime and OpenVINO, in fp32, bf16 and int8.

A folded network is exported once as ONNX (``checkpoint.export_onnx``, checked against PyTorch)
and then, per target:

* ``onnxruntime``: the ONNX file itself (fp32) or an int8 copy with quantize / dequantize pairs
  (static post-training quantization: weights per output channel, activations per tensor,
  calibrated on real images);
* ``openvino``: the same graph as OpenVINO IR (``.xml`` + ``.bin``); fp32 or bf16 is chosen when
  the model is compiled (``INFERENCE_PRECISION_HINT``), never implicitly; int8 is an IR with
  FakeQuantize nodes placed by NNCF.

Where the quantize / dequantize pairs sit decides the speed, so the placement is a named choice
(``PLACEMENTS``), and what actually ran in int8 is read back from the runtime's executed graph
(``executed_precisions``) rather than assumed.  A weighted operator that the runtime keeps in
floating point is named in the calibration summary.

Imports torch and numpy only; onnxruntime, openvino and nncf are imported by the functions that
need them (the ``runtimes`` extra of metamixer-core).
"""

from __future__ import annotations

import json
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from .atomic import atomic_path, write_text

Array = npt.NDArray[np.float32]
Predictor = Callable[[Array], Array]

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: where quantize / dequantize pairs go (see ``quantize``):
#: ``weighted``: inputs of the weighted ops (convs, matmuls) only, everything between them in float;
#: ``all``: every op the quantizer supports (adds, multiplies, activations too);
#: ``dense``: like ``weighted`` but depthwise convs stay in float
PLACEMENTS = ("weighted", "all", "dense")
#: ONNX ops that carry a weight tensor and most of the arithmetic
#: post-training quantizers: ONNX Runtime's (QDQ; asymmetric uint8 activations), NNCF's with its
#: performance preset (symmetric int8 activations) and with its mixed preset (asymmetric)
QUANTIZERS = ("ort", "nncf", "nncf-mixed")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class CalibrationError(ValueError):
    """Calibration data that cannot calibrate: no readable image, or fewer than one batch."""


class AccuracyError(RuntimeError):
    """A quantized or bf16 model whose metric is outside the tolerance."""


@dataclass
class CalibrationSet:
    """Batches of preprocessed inputs, and what was read to make them."""

    batches: list[Array]
    folder: str
    files: list[str]
    unreadable: list[str]
    batch_size: int

    def summary(self) -> dict[str, Any]:
        stacked = np.concatenate(self.batches)
        return {
            "folder": self.folder, "images read": len(self.files),
            "unreadable": self.unreadable, "batch size": self.batch_size,
            "batches": len(self.batches), "inputs": int(stacked.shape[0]),
            "input shape": list(stacked.shape[1:]),
            "input range": [float(stacked.min()), float(stacked.max())],
            "input mean": float(stacked.mean()), "input std": float(stacked.std()),
        }  # fmt: skip


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (by suffix), sorted; none is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration data {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"calibration folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def calibration_set(
    folder: str | Path,
    load: Callable[[Path], Tensor],
    *,
    batch_size: int,
    batches: int | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Calibration batches from the images under ``folder``.

    ``load(path)`` returns one preprocessed input ``(C, H, W)`` or several ``(N, C, H, W)`` (e.g.
    crops); it raises ``OSError`` / ``ValueError`` for a file it cannot read, which is skipped and
    named.  The files are drawn in a seeded random order (a folder sorted by class would otherwise
    calibrate on its first classes only) until ``batches`` full batches are filled (all files if
    ``batches`` is None).  No readable image, or fewer inputs than one batch, is an error naming
    the folder and the counts; a last partial batch is dropped."""
    folder = Path(folder)
    files = image_files(folder)
    random.Random(seed).shuffle(files)
    wanted = None if batches is None else batches * batch_size
    inputs: list[Tensor] = []
    used: list[str] = []
    unreadable: list[str] = []
    for path in files:
        if wanted is not None and len(inputs) >= wanted:
            break
        try:
            x = load(path)
        except (OSError, ValueError) as err:
            unreadable.append(str(path.relative_to(folder)))
            warnings.warn(f"calibration: skipping unreadable {path}: {err}", stacklevel=2)
            continue
        inputs.extend(x if x.dim() == 4 else [x])
        used.append(str(path.relative_to(folder)))
    if not used:
        raise CalibrationError(
            f"calibration folder {folder}: none of its {len(files)} image files is readable "
            f"(first: {', '.join(unreadable[:3])})"
        )
    if len(inputs) < batch_size:
        raise CalibrationError(
            f"calibration folder {folder} gives {len(inputs)} inputs from {len(used)} readable "
            f"images, fewer than one batch of {batch_size}; add images or lower the batch size"
        )
    if wanted is not None and len(inputs) < wanted:
        warnings.warn(
            f"calibration: {folder} fills {len(inputs) // batch_size} of the {batches} batches "
            "asked for",
            stacklevel=2,
        )
    full = len(inputs) // batch_size * batch_size
    stacked = torch.stack(inputs[:full]).float().numpy()
    return CalibrationSet(
        batches=list(np.split(stacked, full // batch_size)),
        folder=str(folder), files=used, unreadable=unreadable, batch_size=batch_size,
    )  # fmt: skip


# --- ONNX -> runtime files -------------------------------------------------------------------


def onnx_input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return str(next(i.name for i in model.graph.input if i.name not in initializers))


def to_openvino(onnx_path: Path, out: Path) -> Path:
    """The ONNX file as OpenVINO IR (``out`` ``.xml`` with its ``.bin``), weights kept in fp32."""
    import openvino as ov

    if out.suffix != ".xml":
        raise ValueError(f"an OpenVINO model is written as .xml (+ .bin), got {out}")
    model = ov.convert_model(str(onnx_path))
    _save_openvino(model, out)
    return out


def _save_openvino(model: Any, out: Path) -> None:
    import openvino as ov

    # the .bin is written next to the .xml by name: write both to temporaries, then rename
    with atomic_path(out) as tmp:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))


@dataclass
class Quantized:
    """What ``quantize`` wrote and how."""

    path: str
    runtime: str
    quantizer: str
    placement: str
    settings: dict[str, Any] = field(default_factory=dict)


def quantize(
    onnx_path: Path,
    out: Path,
    calibration: CalibrationSet,
    *,
    runtime: str,
    placement: str = "weighted",
    quantizer: str | None = None,
    exclude: Sequence[str] = (),
) -> Quantized:
    """Static int8 post-training quantization of the fp32 ONNX file, calibrated on
    ``calibration``, by one of ``QUANTIZERS`` (default ``ort``, ONNX Runtime's): an ONNX file
    with quantize / dequantize pairs for ``onnxruntime``, an IR with FakeQuantize nodes for
    ``openvino`` (ORT's QDQ file converted, or NNCF's).  Weights are quantized symmetrically per
    output channel, activations per tensor; ``placement`` is one of ``PLACEMENTS``; ``exclude``
    names ONNX nodes to keep in float."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r}: choose one of {', '.join(PLACEMENTS)}")
    quantizer = quantizer or "ort"
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer {quantizer!r}: choose one of {', '.join(QUANTIZERS)}")
    skipped = [*exclude, *(_depthwise_nodes(onnx_path) if placement == "dense" else [])]
    if quantizer == "ort" and runtime == "openvino":  # ORT's QDQ file, converted to IR
        with tempfile.TemporaryDirectory() as tmp:
            qdq = Path(tmp) / "int8.onnx"
            settings = _quantize_ort(onnx_path, qdq, calibration, placement, skipped)
            to_openvino(qdq, out)
    elif quantizer == "ort":
        settings = _quantize_ort(onnx_path, out, calibration, placement, skipped)
    else:
        settings = _quantize_nncf(onnx_path, out, calibration, runtime, placement, skipped,
                                  symmetric=quantizer == "nncf")  # fmt: skip
    return Quantized(str(out), runtime, quantizer, placement, settings)


def _depthwise_nodes(onnx_path: Path) -> list[str]:
    """Names of the grouped convs with one input channel per group (depthwise)."""
    import onnx

    model = onnx.load(str(onnx_path))
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = shapes.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is not None and groups > 1 and weight[1] == 1:
            names.append(node.name)
    return names


def _quantize_ort(
    onnx_path: Path, out: Path, calibration: CalibrationSet, placement: str, skipped: list[str]
) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx_input_name(onnx_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[Array] = iter(calibration.batches)

        def get_next(self) -> dict[str, Array] | None:
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    ops = list(WEIGHTED_OPS) if placement != "all" else None
    settings: dict[str, Any] = {
        "format": "QDQ", "per_channel": True, "activations": "QUInt8 asymmetric per tensor",
        "weights": "QInt8 symmetric per channel", "calibration": "MinMax",
        "op_types": ops or "all the quantizer supports", "excluded nodes": skipped,
    }  # fmt: skip
    with atomic_path(out) as tmp:
        quantize_static(
            str(onnx_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=skipped or None,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    return settings


def _quantize_nncf(
    onnx_path: Path,
    out: Path,
    calibration: CalibrationSet,
    runtime: str,
    placement: str,
    skipped: list[str],
    *,
    symmetric: bool,
) -> dict[str, Any]:
    import logging

    import nncf
    import onnx
    from nncf.common.logging.logger import set_log_level

    set_log_level(logging.WARNING)  # not a line per op it leaves alone
    if runtime == "openvino":
        import openvino as ov

        model: Any = ov.convert_model(str(onnx_path))
        by_name = {op.get_friendly_name() for op in model.get_ops()}
        skipped = [n for n in skipped if n in by_name]  # names survive the conversion
    else:
        model = onnx.load(str(onnx_path))
    ignored = nncf.IgnoredScope(names=skipped, validate=False) if skipped else None
    if placement == "weighted":  # only the weighted ops' inputs
        types = ["Add", "Multiply", "Gelu", "Sigmoid"] if runtime == "openvino" else ["Add", "Mul"]
        ignored = nncf.IgnoredScope(names=skipped, types=types, validate=False)
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    name = onnx_input_name(onnx_path)
    feed = None if runtime == "openvino" else (lambda batch: {name: batch})
    quantized = nncf.quantize(
        model, nncf.Dataset(calibration.batches, feed), preset=preset,
        subset_size=len(calibration.batches), ignored_scope=ignored,
    )  # fmt: skip
    if runtime == "openvino":
        _save_openvino(quantized, out)
    else:
        with atomic_path(out) as tmp:
            onnx.save(quantized, str(tmp))
    return {
        "preset": "performance (symmetric activations)" if symmetric
        else "mixed (asymmetric activations)", "weights": "int8 per channel",
        "ignored": {"names": skipped, "types": getattr(ignored, "types", [])},
        "subset size": sum(len(b) for b in calibration.batches),
    }  # fmt: skip


# --- running --------------------------------------------------------------------------------


def load(
    path: str | Path,
    runtime: str,
    precision: str = "fp32",
    threads: int = 0,
    shape: Sequence[int] | None = None,
) -> Predictor:
    """A callable running the model file on the CPU: ``x (N, C, H, W) float32 -> output``.
    ``precision`` is the inference precision the runtime is told to use (``fp32``, or ``bf16``
    on OpenVINO); an int8 file runs its int8 ops whatever it is.  ``threads`` 0: the runtime's
    default.  ``shape``: OpenVINO compiles for that input shape only (faster than dynamic)."""
    path = Path(path)
    if runtime == "onnxruntime":
        if precision == "bf16":
            raise ValueError("bf16 is offered on openvino only (ONNX Runtime's CPU provider "
                             "has no bf16 convolutions)")  # fmt: skip
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_ort(x: Array) -> Array:
            return np.asarray(session.run(None, {name: x})[0], dtype=np.float32)

        return run_ort
    if runtime == "openvino":
        # compiled for each input shape it meets (static shapes: faster, and OpenVINO 2026.4
        # crashes running some int8 IRs with a dynamic batch)
        requests: dict[tuple[int, ...], tuple[Any, Any]] = {}
        if shape is not None:
            compiled = _compile_openvino(path, precision, threads, shape)
            requests[tuple(shape)] = (compiled, compiled.create_infer_request())

        def run_ov(x: Array) -> Array:
            if x.shape not in requests:
                compiled = _compile_openvino(path, precision, threads, x.shape)
                requests[x.shape] = (compiled, compiled.create_infer_request())
            compiled, request = requests[x.shape]
            result = request.infer({0: x})
            return np.array(result[compiled.output(0)], dtype=np.float32)

        return run_ov
    raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")


def _compile_openvino(
    path: Path, precision: str, threads: int, shape: Sequence[int] | None = None
) -> Any:
    import openvino as ov

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    hint = "bf16" if precision == "bf16" else "f32"  # int8 ops run int8; the rest in f32
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    core = ov.Core()
    model = core.read_model(str(path))
    if shape is not None:
        model.reshape({model.input(0): ov.PartialShape(list(shape))})
    return core.compile_model(model, "CPU", config)


def executed_precisions(
    path: str | Path, runtime: str, precision: str = "fp32"
) -> dict[str, dict[str, int]]:
    """What ran in which precision: per executed operator type, how many nodes ran in each
    precision (``int8``, ``fp32``, ``bf16``), read from the runtime's own optimized graph (ONNX
    Runtime's after its fusions, OpenVINO's executed graph)."""
    counts: dict[str, dict[str, int]] = {}
    for op, prec, _ in _executed_nodes(Path(path), runtime, precision):
        counts.setdefault(op, {}).setdefault(prec, 0)
        counts[op][prec] += 1
    return dict(sorted(counts.items()))


def _rt_info(info: Any, key: str) -> str:
    return str(info[key].astype(str)) if key in info else ""


def _executed_nodes(path: Path, runtime: str, precision: str) -> list[tuple[str, str, str]]:
    """(operator type, precision, name) of each node the runtime executes."""
    if runtime == "openvino":
        compiled = _compile_openvino(path, precision, 0)
        nodes = []
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = _rt_info(info, "layerType") or op.get_type_name()
            raw = _rt_info(info, "runtimePrecision") or "f32"
            prec = {"i8": "int8", "u8": "int8", "bf16": "bf16"}.get(raw, "fp32")
            names = _rt_info(info, "originalLayersNames")
            nodes.append((kind, prec, names or op.get_friendly_name()))
        return [n for n in nodes if n[0] not in ("Input", "Parameter", "Output", "Result")]
    import onnx
    import onnxruntime as ort

    with atomic_path(path.with_name(path.stem + ".optimized.onnx")) as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # not the note that the saved graph is CPU-specific
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(tmp)).graph
    int8 = {i.name for i in graph.initializer if i.data_type in (2, 3)}  # uint8, int8
    nodes = []
    for node in graph.node:
        quantized = node.op_type.startswith("QLinear") or node.op_type in (
            "ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeLinear",
        ) or (node.op_type not in ("QuantizeLinear", "DequantizeLinear")
              and any(i in int8 for i in node.input[1:2]))  # fmt: skip
        nodes.append((node.op_type, "int8" if quantized else "fp32", node.name))
    return nodes


def kept_float(path: str | Path, runtime: str, source: str | Path) -> list[str]:
    """The weighted operators (``WEIGHTED_OPS`` of the fp32 ONNX ``source``) that the runtime
    still runs in floating point in the int8 model: ``'Einsum /head/Einsum'`` per node."""
    import onnx

    weighted = {(n.op_type, n.name) for n in onnx.load(str(source)).graph.node
                if n.op_type in WEIGHTED_OPS}  # fmt: skip
    floating = [(op, name) for op, prec, name in _executed_nodes(Path(path), runtime, "fp32")
                if prec == "fp32"]  # fmt: skip
    kept = []
    for op, name in sorted(weighted):
        # a node keeps its name through the runtime's fusions, alone or in a list of fused names
        if any(name in executed.split(",") or name == executed for _, executed in floating):
            kept.append(f"{op} {name}")
    return kept


class RuntimeNetwork(nn.Module):
    """A runtime predictor in place of a torch network, for evaluation code written for torch
    (a LightningModule's test loop): float32 in, float32 out, on the CPU, no gradients."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: Tensor) -> Tensor:
        out = self.predictor(x.detach().float().contiguous().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def max_difference(predictor: Predictor, model: nn.Module, x: Tensor) -> float:
    """Largest |runtime - PyTorch| over the output of ``x``."""
    with torch.no_grad():
        ref = model(x).float().numpy()
    return float(np.abs(predictor(x.numpy()) - ref).max())


@dataclass
class AccuracyCheck:
    """The task metric of the runtime model next to the fp32 PyTorch network's on the same data."""

    metric: str
    reference: float
    measured: float
    tolerance: float
    higher_is_better: bool = True

    @property
    def drop(self) -> float:
        """How much worse than the reference (positive: worse)."""
        sign = 1 if self.higher_is_better else -1
        return sign * (self.reference - self.measured)

    @property
    def within(self) -> bool:
        return self.drop <= self.tolerance

    def describe(self) -> str:
        return (f"{self.metric}: {self.measured:.4g} vs fp32 {self.reference:.4g} "
                f"(drop {self.drop:+.4g}, tolerance {self.tolerance:g})")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "within tolerance": self.within}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_text(path, json.dumps(data, indent=1) + "\n")
