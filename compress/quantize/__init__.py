"""Quantization: INT8 through NNCF (PTQ, QAT), codebook quantization (JLCM, k-means), bit-wise training.

`check_qdq` inspects a Q/DQ ONNX graph against ONNX Runtime's or TensorRT's rules.
"""

from compress.quantize import bitwise, codebook, int8  # noqa: F401  (register the methods)
from compress.quantize.qdq import check_qdq

__all__ = ["check_qdq"]
