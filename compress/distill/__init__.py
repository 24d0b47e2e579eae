"""Distillation: a student learns from a frozen teacher.

Methods (one module each): `kd` (logits), `funmatch` (patient and consistent function matching),
`msd` (multi-scale decoupled contrastive), `crd` (contrastive representation distillation with
memory banks), `pcd` (pixel-wise contrastive, dense tasks), `guidance` (CKA representational
alignment) and `feature_mse` (FitNets-style feature regression).
"""

from compress.distill import crd, feature, funmatch, guidance, kd, msd, pcd  # noqa: F401  (register the methods)
