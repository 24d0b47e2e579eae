"""ONNX Runtime: the embedded default backend, runs anywhere.

Sessions use full graph optimisation, sequential execution, intra-op threads = physical cores
(recorded) and one inter-op thread. Providers are passed explicitly and checked afterwards, because
ONNX Runtime silently falls back to the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.backends.base import Backend, BackendOptions, Session
from compress.env import physical_cores
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
        wanted = ["CPUExecutionProvider"]
        if options.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    "ONNX Runtime has no CUDA provider here; install onnxruntime-gpu or use --device cpu"
                )
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=wanted)
        except Exception as e:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, NoSuchFile...
            raise BackendError(f"{path}: not a loadable ONNX model ({str(e).strip().splitlines()[0][:300]})") from None
        self.providers = self.sess.get_providers()
        if wanted[0] not in self.providers:
            raise BackendError(f"ONNX Runtime fell back from {wanted[0]} to {self.providers}")
        inputs = self.sess.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{path}: models with {len(inputs)} inputs are not supported (need exactly 1)")
        self.input_name = inputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.input_dtype = np.dtype(_DTYPES.get(inputs[0].type, np.float32))
        self.output_name = self.sess.get_outputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output_name], {self.input_name: x})[0]

    def runner(self, x: np.ndarray):
        self.validate(x)
        sess_run, names, feed = self.sess.run, [self.output_name], {self.input_name: x}
        return lambda: sess_run(names, feed)

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "backend": "onnxruntime",
            "version": ort.__version__,
            "providers": self.providers,
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution": "sequential",
            "graph_optimization": "ORT_ENABLE_ALL",
        }


class OrtBackend(Backend):
    def _load(self, path: Path, options: BackendOptions) -> Session:
        return OrtSession(path, options)


BACKEND = OrtBackend("onnxruntime", (".onnx",))
