"""ONNX Runtime: the embedded default backend, runs anywhere.

Sessions use full graph optimisation, sequential execution, intra-op threads = physical cores
(recorded) and one inter-op thread. Providers are passed explicitly and checked afterwards, because
ONNX Runtime silently falls back to the CPU.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from compress.backends.base import Backend, BackendOptions, Session
from compress.env import cpu_isa, physical_cores
from compress.errors import BackendError

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class OrtSession(Session):
    def __init__(self, path: Path, options: BackendOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = options.threads or physical_cores()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        wanted: list = ["CPUExecutionProvider"]
        self.device, self.stream = options.device, None
        if options.device == "cuda":
            first = "TensorrtExecutionProvider" if options.provider == "tensorrt" else "CUDAExecutionProvider"
            if options.provider not in ("", "cuda", "tensorrt"):
                raise BackendError(f"unknown ONNX Runtime provider '{options.provider}'; available: cuda, tensorrt")
            if first not in ort.get_available_providers():
                raise BackendError(
                    f"ONNX Runtime has no {first} here; install onnxruntime-gpu (and TensorRT for its provider) "
                    "or use --device cpu"
                )
            cuda_opts = {}
            try:  # ORT's CUDA work on torch's stream, so CUDA events time it
                import torch

                if torch.cuda.is_available():
                    self.stream = torch.cuda.Stream()
                    cuda_opts = {"user_compute_stream": str(self.stream.cuda_stream)}
            except ImportError:
                pass
            wanted = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
            if first == "TensorrtExecutionProvider":  # on the same stream, so the CUDA events bracket its work
                wanted.insert(0, (first, dict(cuda_opts)))
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=wanted)
        except Exception as e:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, NoSuchFile...
            raise BackendError(f"{path}: not a loadable ONNX model ({str(e).strip().splitlines()[0][:300]})") from None
        self.providers = self.sess.get_providers()
        # every GPU provider asked for must have loaded: with TensorRT's, a missing CUDA provider would
        # leave the nodes TensorRT does not take on the CPU
        gpu = [p if isinstance(p, str) else p[0] for p in wanted if p != "CPUExecutionProvider"]
        missing = [p for p in gpu if p not in self.providers]
        if missing:
            raise BackendError(f"ONNX Runtime fell back: {', '.join(missing)} did not load (it runs {self.providers})")
        inputs = self.sess.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{path}: models with {len(inputs)} inputs are not supported (need exactly 1)")
        self.input_name = inputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.input_dtype = np.dtype(_DTYPES.get(inputs[0].type, np.float32))
        self.output_name = self.sess.get_outputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output_name], {self.input_name: x})[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.validate(x)
        names = [o.name for o in self.sess.get_outputs()]
        return dict(zip(names, self.sess.run(names, {self.input_name: x}), strict=True))

    def runner(self, x: np.ndarray):
        self.validate(x)
        if self.device == "cuda":  # IOBinding: input and output stay on the device, no copies timed
            import onnxruntime as ort

            binding = self.sess.io_binding()
            binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            binding.bind_output(self.output_name, "cuda")
            run_binding, binding_ = self.sess.run_with_iobinding, binding
            return lambda: run_binding(binding_)
        sess_run, names, feed = self.sess.run, [self.output_name], {self.input_name: x}
        return lambda: sess_run(names, feed)

    def timer(self):
        if self.stream is not None:
            from compress.backends.base import CudaEventTimer

            return CudaEventTimer(self.stream)
        return super().timer()

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        info = {
            "backend": "onnxruntime",
            "version": ort.__version__,
            "providers": self.providers,
            "device": self.device,
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution": "sequential",
            "graph_optimization": "ORT_ENABLE_ALL",
        }
        if self.device == "cuda":  # the card's name, driver and clocks, as the other GPU backends report them
            from compress.backends.cuda import device_info

            info["gpu"] = device_info()
        return info


class OrtBackend(Backend):
    def _load(self, path: Path, options: BackendOptions) -> Session:
        return OrtSession(path, options)


BACKEND = OrtBackend("onnxruntime", (".onnx",))


# ---- INT8 on ONNX Runtime CPU: where Q/DQ must sit, and what the runtime really ran ----------------

# How a Q/DQ graph must look for ONNX Runtime's CPU provider to run it as integer kernels. ORT fuses a
# `DequantizeLinear -> op -> QuantizeLinear` group into one integer kernel (QLinearConv, QGemm, QLinearAdd,
# ...) only when (a) nothing sits between the op and its QuantizeLinear (a Relu/Clip there leaves the op
# in float behind a DequantizeLinear, with layout Transposes around it), (b) the input and output
# activations share one integer type (uint8 in, int8 out does not fuse), (c) activations are
# quantized per tensor (QLinearConv takes one input scale) and (d) the op's output is read by a
# QuantizeLinear: an activation with no integer kernel (HardSwish, SiLU) gets its input quantized
# (range observed on the calibration data) and runs in float between DQ and Q, instead of keeping
# the Conv in float, (e) every input, the bias too, comes from a DequantizeLinear that feeds the op
# directly (DQ -> Flatten -> Gemm with a float bias leaves the classifier in float), (f) with no
# integer HardSwish / SiLU, x * gate(x) is written with the integer ops ORT has (QLinearSigmoid or
# QLinearAdd for the gate, QLinearMul for the product) instead of float passes between DQ and Q.
# On x86 the u8 x s8 kernels are the fast ones (VPMADDUBSW / VNNI); without VNNI they saturate (see
# `u8s8_saturates`), and the weights then use half the int8 range.
# Read by `compress.quantize.targets`.
INT8_RULES = {
    "activations_per_tensor": True,
    "rewrites": (
        "activations_to_uint8",
        "absorb_activations",
        "dequantize_after_shape_ops",
        "quantize_outputs",
        # after quantize_outputs (NNCF leaves a pool's output unquantized; that pass adds its Q) and before
        # quantize_biases (the int32 bias scale of the conv after the pool is its input scale times the weight's)
        "share_pool_grid",
        "quantize_biases",
        "integer_activations",
    ),
    "signed_only": False,
    # asymmetric activations (NNCF's mixed preset): SiLU / HardSwish outputs reach only -0.28 / -0.375, so a
    # symmetric range wastes half the grid; random-init mobilenet_v3_large rel. logit error 0.334 -> 0.303 (3 seeds)
    "preset": "mixed",
}


def u8s8_saturates(isa: tuple[str, ...] | None = None, machine: str | None = None) -> bool:
    """Whether ONNX Runtime's u8 x s8 integer kernels can saturate on this CPU.

    On x86 without VNNI, MLAS multiplies with VPMADDUBSW, which adds two u8 x s8 products into an
    int16: 2 * 255 * 127 overflows it. VNNI (AVX512-VNNI, AVX-VNNI) and AMX accumulate in int32;
    ARM's dot-product kernels do too. With weights in half the int8 range (|w| <= 64, NNCF's
    overflow fix, ORT's `reduce_range`) the sum fits. Measured on an AVX2-only AMD EPYC, random-init
    resnet18, 128 photo crops: top-1 agreement with float 77.3% (full range) vs 88.3% (half); the
    same file run unfused (DQ + float kernels) 82.8%, so the integer kernels themselves lost 5.5 pt.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    isa = cpu_isa() if isa is None else isa
    return not any(f in isa for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


# compute ops: integer kernels and their float counterparts in ORT's optimised graph
INTEGER_COMPUTE_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QAttention",
)
FLOAT_COMPUTE_OPS = (
    "Conv",
    "FusedConv",
    "NhwcFusedConv",
    "ConvTranspose",
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "FusedGemm",
)
CONVERSION_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


def runtime_report(
    path: str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    threads: int = 0,
    runs: int = 10,
) -> dict[str, Any]:
    """What ONNX Runtime's CPU provider really runs for the model at `path`.

    Reads the graph ORT optimises (`SessionOptions.optimized_model_filepath`) and times `runs` calls
    with ORT's profiler on a seeded random input of `input_shape` (one sample with batch axis; taken
    from the model's input where its dimensions are fixed; dynamic dimensions default to 1, or 224
    for spatial ones). Returns: `compute_ops` / `integer_compute_ops` (Conv/MatMul/Gemm family, as
    integer kernels), `float_compute_nodes` (names of those that run in float), `integer_ops` (every
    integer kernel by type), `conversion_ops` (Q/DQ left at run time), `layout_transposes`,
    `time_share` (op type -> fraction of kernel time), `time_share_integer` / `_float_compute` /
    `_conversion`, `node_times_us` (per node, median over the runs), `summary` ("int8 ops 49/49").
    """
    import json
    import tempfile
    from collections import Counter

    import onnx
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    with tempfile.TemporaryDirectory(prefix="compress-ort-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads or physical_cores()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise BackendError(f"{path}: not a loadable ONNX model ({str(e).strip().splitlines()[0][:300]})") from None
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{path}: models with {len(inputs)} inputs are not supported (need exactly 1)")
        shape = _report_shape(inputs[0].shape, input_shape)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(_DTYPES.get(inputs[0].type, np.float32))
        feed = {inputs[0].name: x}
        sess.run(None, feed)  # the first call is not representative
        for _ in range(max(1, runs)):
            sess.run(None, feed)
        prof = Path(sess.end_profiling())
        events = json.loads(prof.read_text())
        graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    sources = fused_sources(graph, onnx.load(str(path), load_external_data=False).graph)
    ops = Counter(n.op_type for n in graph.node)
    compute_int = [n for n in graph.node if n.op_type in INTEGER_COMPUTE_OPS]
    compute_float = [n for n in graph.node if n.op_type in FLOAT_COMPUTE_OPS]
    per_node: dict[str, list[float]] = {}
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        per_node.setdefault(name, []).append(float(e.get("dur", 0)))
        node_op[name] = e.get("args", {}).get("op_name", "?")
    node_us = {k: float(np.median(v)) for k, v in per_node.items()}
    by_op: Counter[str] = Counter()
    for name, us in node_us.items():
        by_op[node_op[name]] += us
    total = sum(by_op.values()) or 1.0
    share = {k: v / total for k, v in by_op.most_common()}
    n_compute = len(compute_int) + len(compute_float)
    integer_ops = {k: v for k, v in sorted(ops.items()) if k.startswith("QLinear") or k in INTEGER_COMPUTE_OPS}
    report = {
        "path": str(path),
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "threads": so.intra_op_num_threads,
        "input_shape": list(shape),
        "compute_ops": n_compute,
        "integer_compute_ops": len(compute_int),
        "float_compute_nodes": [n.name or n.op_type for n in compute_float],
        "integer_ops": integer_ops,
        "conversion_ops": {k: ops[k] for k in CONVERSION_OPS if ops.get(k)},
        "layout_transposes": ops.get("Transpose", 0),
        "ops": dict(ops.most_common()),
        "time_share": share,
        "time_share_integer": sum(v for k, v in share.items() if k in integer_ops),
        "time_share_float_compute": sum(v for k, v in share.items() if k in FLOAT_COMPUTE_OPS),
        "time_share_conversion": sum(v for k, v in share.items() if k in CONVERSION_OPS),
        "kernel_time_us": total if by_op else 0.0,
        "node_times_us": node_us,
        "node_sources": {k: v for k, v in sources.items() if k in node_us},
        "summary": f"int8 ops {len(compute_int)}/{n_compute}",
    }
    return report


# ops ORT fuses into the convolution or matmul that feeds them (BatchNormalization folded, activations and a
# residual Add/Sum fused): a fused node takes its name from the last of them
_FUSED_INTO_COMPUTE = {
    "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sum",
}  # fmt: skip
_SOURCE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def fused_sources(optimized: Any, original: Any) -> dict[str, str]:
    """Optimised compute node name -> name of the original Conv/Gemm/MatMul it runs, where ORT renamed it.

    A Conv fused with its BatchNorm and activation (and put in the NCHWc layout) is named after the
    activation's output (`/stem/stem.2/Relu_output_0_nchwc`), so a time read by node name lands on the
    activation, not on the conv. Walking back from that tensor through the ops ORT fuses into a conv
    finds it.
    """
    producer = {o: n for n in original.node for o in n.output}
    out: dict[str, str] = {}
    for node in optimized.node:
        if node.op_type not in FLOAT_COMPUTE_OPS + INTEGER_COMPUTE_OPS or not node.name:
            continue
        src = producer.get(node.name.removesuffix("_nchwc")) or producer.get(node.output[0].removesuffix("_nchwc"))
        for _ in range(8):
            if src is None or src.op_type not in _FUSED_INTO_COMPUTE:
                break
            feeds = [producer[i] for i in src.input if i in producer]
            # an Add's conv branch: the input a Conv or BatchNormalization makes
            src = next((f for f in feeds if f.op_type in _SOURCE_OPS or f.op_type == "BatchNormalization"), None)
        if src is not None and src.op_type in _SOURCE_OPS and src.name and src.name != node.name:
            out[node.name] = src.name
    return out


def _report_shape(model_shape: list[Any], given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is not None:
        shape = tuple(int(d) for d in given)
        if len(shape) == len(model_shape) - 1:
            shape = (1, *shape)
        if len(shape) != len(model_shape):
            raise BackendError(f"input shape {list(given)} does not fit the model's input {model_shape}")
        return shape
    out = []
    for i, d in enumerate(model_shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        else:
            out.append(224 if i >= 2 else 1)
    return tuple(out)
