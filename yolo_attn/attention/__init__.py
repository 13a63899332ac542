"""Attention core: mask-defined patterns, their exact fast paths, the learned variants and positional encodings."""

from . import area  # noqa: F401  (registers the "area" pattern)
from .cluster import ROUTERS, ClusterAttention, cluster_attention, cluster_mask
from .flex import cuda_backend_table, set_cuda_backend, use_cuda_backend
from .functional import PATTERNS, attend, pattern_mask, relative_position_bias
from .kernel import mask_to_bias, masked_attention
from .linear import LinearAttention, linear_attention
from .modules import Attention
from .performer import PerformerAttention, performer_attention
from .posenc import (
    POS_ENCODINGS,
    ConditionalPosEncoding,
    LearnedPosEmbed,
    RelativePositionBias,
    SinCosPosEmbed,
    build_pos_encoding,
    sincos_2d,
)
from .reduce import ReduceAttention, reduce_attention
from .routing import RoutingAttention, routing_attention, routing_mask
from .sinkhorn import SinkhornAttention, sinkhorn_attention, sinkhorn_mask
from .tokens import GlobalTokenAttention

__all__ = [
    "PATTERNS",
    "POS_ENCODINGS",
    "ROUTERS",
    "Attention",
    "ClusterAttention",
    "ConditionalPosEncoding",
    "GlobalTokenAttention",
    "LearnedPosEmbed",
    "LinearAttention",
    "PerformerAttention",
    "ReduceAttention",
    "RelativePositionBias",
    "RoutingAttention",
    "SinCosPosEmbed",
    "SinkhornAttention",
    "attend",
    "build_pos_encoding",
    "cluster_attention",
    "cluster_mask",
    "cuda_backend_table",
    "linear_attention",
    "mask_to_bias",
    "masked_attention",
    "pattern_mask",
    "performer_attention",
    "reduce_attention",
    "relative_position_bias",
    "routing_attention",
    "routing_mask",
    "set_cuda_backend",
    "sincos_2d",
    "sinkhorn_attention",
    "sinkhorn_mask",
    "use_cuda_backend",
]
