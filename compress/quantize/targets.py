"""Where Q/DQ goes, per deployment target. The rules themselves live with each target's backend.

`rules_for(target)` returns a `QdqRules`: what to ask NNCF for (per-tensor activations, signed INT8)
and which graph rewrites of `compress.quantize.rewrite` turn NNCF's Q/DQ graph into one the runtime
runs as integer kernels. ONNX Runtime's rules are `compress.backends.onnxruntime.INT8_RULES`,
TensorRT's `compress.backends.tensorrt.INT8_RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.errors import RecipeError


@dataclass(frozen=True)
class QdqRules:
    """How a target wants its Q/DQ graph.

    Attributes:
        target: the runtime's name.
        activations_per_tensor: ask the quantizer for one scale per activation tensor.
        rewrites: names of `compress.quantize.rewrite` passes applied, in order, to the Q/DQ file.
        signed_only: only signed, symmetric INT8 (the file is rewritten with `to_signed_int8`).
        preset: NNCF's preset when the config asks for `auto`: performance (symmetric activations) or
            mixed (asymmetric activations).
        weights_half_range: weights in half the int8 range on every conv / matmul (NNCF's overflow
            fix), where the runtime's integer kernels would saturate on full-range weights.
    """

    target: str
    activations_per_tensor: bool = False
    rewrites: tuple[str, ...] = ()
    signed_only: bool = False
    preset: str = "performance"
    weights_half_range: bool = False


def rules_for(target: str) -> QdqRules:
    half = False
    if target == "onnxruntime":
        from compress.backends.onnxruntime import INT8_RULES, u8s8_saturates

        raw = INT8_RULES
        half = u8s8_saturates()
    elif target == "tensorrt":
        from compress.backends.tensorrt import INT8_RULES as raw
    else:
        raise RecipeError(f"unknown INT8 target '{target}'; available: onnxruntime, tensorrt")
    return QdqRules(
        target=target,
        activations_per_tensor=bool(raw["activations_per_tensor"]),
        rewrites=tuple(raw["rewrites"]),
        signed_only=bool(raw["signed_only"]),
        preset=str(raw.get("preset", "performance")),
        weights_half_range=half,
    )
