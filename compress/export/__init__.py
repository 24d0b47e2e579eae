"""Export to deployable formats."""

from compress.export.onnx import ExportConfig, export_onnx

__all__ = ["ExportConfig", "export_onnx"]
