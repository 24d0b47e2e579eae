"""N:M fine-grained sparsity: masks along the input-channel axis, eligibility rules and the one
pattern checker shared by torch models and ONNX files (`compress check --expect-sparsity`,
`compress info --sparsity`, `prune --method nm`)."""

from compress.sparsity.check import pattern_report
from compress.sparsity.masks import eligibility, input_axis, nm_mask, parse_nm

__all__ = ["eligibility", "input_axis", "nm_mask", "parse_nm", "pattern_report"]
