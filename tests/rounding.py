"""The standard model of floating-point arithmetic, applied to networks: what error a low precision must cause.

Every floating-point operation returns its exact result times ``(1 + delta)`` with ``|delta| <= u``, the unit roundoff
of the dtype (fp16: ``2**-11``, bf16: ``2**-8``) (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 2).
Two uses of it:

- :class:`RoundingDepth` *counts* the rounding stages: the longest chain of rounding operations behind a tensor
  (aten ops, as dispatched; ops that only move or select values are exact). For a shallow computation whose stages
  are well conditioned the relative error is at most about one ``u`` per stage: ``stages * u``.
- :func:`standard_model_error` *simulates* it on a deep network, where the conditioning of the trained weights
  decides how the per-stage errors grow (measured: the fp16 error of briefly trained YOLOv5n detectors ranges over
  10-55 u from one training seed to the next, for plain and attention configs alike): the fp32 model, with its input
  and the output of every rounding module perturbed by an independent relative ``delta`` uniform in ``[-u, u]``. The
  arithmetic inside other modules (attention cores, residual sums) is left exact, so a precision loss there shows as
  an excess of the real low-precision error over the simulated one.

Use::

    from rounding import RoundingDepth, standard_model_error

    with RoundingDepth() as depth:
        y = half_module(x)
    stages = depth.of(y)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from yolo_attn.blocks import LayerScale

#: aten ops (overload packets) whose floating results are exact copies, selections or constants: not rounding stages.
EXACT_OPS = frozenset({
    "_unsafe_view", "alias", "amax", "amin", "arange", "cat", "clamp", "clamp_min", "clamp_max", "clone",
    "constant_pad_nd", "copy_", "detach", "empty", "expand", "fill_", "full", "gather", "index", "index_select",
    "lift_fresh", "masked_fill", "max", "max_pool2d_with_indices", "maximum", "min", "minimum", "neg", "new_zeros",
    "ones", "permute", "relu", "scatter", "select", "slice", "sort", "split", "split_with_sizes", "squeeze", "stack",
    "t", "topk", "transpose", "unbind", "unsqueeze", "upsample_nearest2d", "view", "where", "zeros", "zeros_like",
})
#: Modules whose output :func:`standard_model_error` rounds (one stage each). Data movement (upsampling, pooling,
#: concatenation) is exact; arithmetic inside other modules is left exact on purpose (see the module docstring).
ROUNDING_MODULES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.SiLU, nn.GELU, LayerScale)


def _rounds(name: str, tensors: list[torch.Tensor], out: torch.Tensor) -> bool:
    if name == "_to_copy":  # a cast rounds only when it narrows
        return any(t.is_floating_point() and torch.finfo(out.dtype).eps > torch.finfo(t.dtype).eps for t in tensors)
    return name not in EXACT_OPS


class RoundingDepth(TorchDispatchMode):
    """Counts, for every floating tensor computed under the mode, the longest chain of rounding ops behind it.

    Tensors made outside the mode (inputs, parameters, buffers) count as rounded once (they were converted to the low
    precision); constants made inside it (no floating input) and integer and boolean tensors (indices, masks) as
    exact.

    Examples:
        >>> lin, x = torch.nn.Linear(4, 4).half(), torch.randn(2, 4).half()
        >>> with RoundingDepth() as depth:
        ...     y = torch.relu(lin(x)).transpose(0, 1)
        >>> depth.of(y)  # x (converted), then addmm; relu and transpose are exact
        2
    """

    def __init__(self) -> None:
        super().__init__()
        self._depth = WeakTensorKeyDictionary()

    def of(self, t: torch.Tensor) -> int:
        """Rounding stages behind ``t``."""
        return self._depth.get(t, 1) if t.is_floating_point() else 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        floating = [t for t in tensors if t.is_floating_point()]
        if results:
            depth = max(self.of(t) for t in floating) + _rounds(func.overloadpacket.__name__, floating, results[0]) \
                if floating else 0
            for t in results:
                self._depth[t] = depth
        return out


@torch.no_grad()
def standard_model_error(
    model: nn.Module, x: torch.Tensor, reference: tuple, u: float, keys: tuple[str, ...], draws: int = 2, seed: int = 0
) -> dict[str, float]:
    """Relative error of ``model``'s head outputs under the standard model of rounding, mean over ``draws``.

    Args:
        model: An fp32 detector in eval mode.
        x: Its input ``[B, 3, H, W]``.
        reference: ``model(x)``, unperturbed: ``(decoded, {key: logits})``.
        u: Unit roundoff of the simulated dtype.
        keys: Output entries to measure (``"boxes"``, ``"scores"``).
        draws: Independent perturbations averaged.
        seed: Seed of the perturbations' generator (the global RNG is untouched).

    Returns:
        ``{key: ||y_perturbed - y|| / ||y||}`` (2-norms over the whole output).
    """
    gen = torch.Generator().manual_seed(seed)

    def perturb(t: torch.Tensor) -> torch.Tensor:
        return t * (1 + u * (2 * torch.rand(t.shape, generator=gen, dtype=t.dtype) - 1))

    hooks = [m.register_forward_hook(lambda m, i, o: perturb(o)) for m in model.modules()
             if isinstance(m, ROUNDING_MODULES)]
    errors = dict.fromkeys(keys, 0.0)
    try:
        for _ in range(draws):
            y = model(perturb(x))[1]
            for k in keys:
                errors[k] += float((y[k].double() - reference[1][k].double()).norm() / reference[1][k].double().norm())
    finally:
        for hook in hooks:
            hook.remove()
    return {k: e / draws for k, e in errors.items()}
