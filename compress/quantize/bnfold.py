"""BatchNorm folding before quantization: in the ONNX graph (ONNX Runtime's basic optimisation) or in torch."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compress.quantize._common import replace_module


def fold_batchnorm_onnx(src: Path, dst: Path) -> None:
    """ONNX Runtime's basic optimisation folds BN (and constants) into the convolutions; standard ops only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def fold_batchnorm_torch(module: nn.Module) -> nn.Module:
    """A copy with each BatchNorm that directly follows a Conv folded into it (the BN becomes Identity).

    The pairs are found by tracing with torch.fx; a module that cannot be traced is returned unfolded.
    The result stays a plain nn.Module (NNCF would treat an fx.GraphModule as a torch.fx model).
    """
    import copy

    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # not fx-traceable: quantize with BN unfolded
        return module
    mods = dict(module.named_modules())
    users: dict[str, int] = {}
    for node in graph.nodes:
        for arg in node.all_input_nodes:
            users[arg.name] = users.get(arg.name, 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and users.get(src.name) == 1):
            continue
        conv = mods.get(src.target)
        if not isinstance(conv, nn.Conv2d) or type(conv) is not nn.Conv2d:
            continue
        fused = fuse_conv_bn_eval(conv, mods[node.target])
        replace_module(module, src.target, fused)
        replace_module(module, node.target, nn.Identity())
    return module
