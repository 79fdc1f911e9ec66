"""Sparse ops: masked training layers, mask rules, layer specs and inference kernels."""
from __future__ import annotations

from .batchnorm import recalibrate_bn
from .inference import Chooser, kernel_choices, kernel_inputs, measure_kernels, measured_choice, to_inference
from .kernels import (
    KERNELS, CsrConv1x1Kernel, CsrLinearKernel, DenseConv1x1Kernel, DenseConv2dKernel, DenseLinearKernel,
    KernelImpl, ScipyCsrConv1x1Kernel, ScipyCsrLinearKernel, frozen_weight, is_pointwise, kernel_impl, make_kernel,
)
from .masks import (
    CubicSparsitySchedule, InvalidSparsity, TopKStraightThrough, check_nm, check_sparsity, magnitude_mask,
    nm_mask, score_mask,
)
from .sparse import (
    MASK_KINDS, GradualPruner, SparseConv2d, SparseLinear, SparseMixin, apply_sparsity, sparse_modules,
    update_masks,
)
from .spec import OPS, LayerSpec, trace_layers, trace_named_layers
from .g2g import (
    DST_GROW, DST_PRUNE, G2G_GRAPHS, G2G_GROUPINGS, DSTConfig, G2GConv2d, G2GLinear, G2GMixin, enable_dst, g2g_density,
    g2g_layer_mask, g2g_mask, g2g_modules, g2g_plan, group_assignment, group_graph, hebbian_scores,
)

__all__ = [
    "recalibrate_bn",
    "Chooser", "kernel_choices", "kernel_inputs", "measure_kernels", "measured_choice", "to_inference",
    "KERNELS", "CsrConv1x1Kernel", "CsrLinearKernel", "DenseConv1x1Kernel", "DenseConv2dKernel",
    "DenseLinearKernel", "KernelImpl", "ScipyCsrConv1x1Kernel", "ScipyCsrLinearKernel", "frozen_weight",
    "is_pointwise", "kernel_impl", "make_kernel",
    "CubicSparsitySchedule", "InvalidSparsity", "TopKStraightThrough", "check_nm", "check_sparsity",
    "magnitude_mask", "nm_mask", "score_mask",
    "MASK_KINDS", "GradualPruner", "SparseConv2d", "SparseLinear", "SparseMixin", "apply_sparsity",
    "sparse_modules", "update_masks",
    "OPS", "LayerSpec", "trace_layers", "trace_named_layers",
    "DST_GROW", "DST_PRUNE", "G2G_GRAPHS", "G2G_GROUPINGS", "DSTConfig", "G2GConv2d", "G2GLinear", "G2GMixin",
    "enable_dst", "g2g_density", "g2g_layer_mask", "g2g_mask", "g2g_modules", "g2g_plan", "group_assignment",
    "group_graph", "hebbian_scores",
]
