"""Attention core: mask-defined patterns, their exact fast paths and the generic multi-head module."""

from .functional import PATTERNS, attend, pattern_mask, relative_position_bias
from .kernel import mask_to_bias, masked_attention
from .modules import Attention
