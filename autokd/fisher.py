"""Fisher pruning's channel importance for torch-pruning (the ``fisher`` method of :mod:`autokd.compress`).

Apart from :mod:`autokd.compress` because torch-pruning, which it subclasses, imports timm,
torchvision and torch._dynamo: only a trial that prunes by Fisher imports it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn


class FisherImportance(tp.importance.Importance):
    """Fisher pruning's channel importance, for torch-pruning's pruners.

    Theis et al. 2018, "Faster gaze prediction with dense networks and Fisher pruning" (eq. 7,
    after Molchanov et al. 2017): zeroing channel ``k`` raises the loss by about

        Delta_k = 1 / (2 N) * sum_n ( sum_ij a_nkij * g_nkij )^2

    ``a`` the channel's activation on training image ``n``, ``g = dL_n / da`` the gradient of that
    image's loss. :meth:`accumulate` measures it on the output of every BatchNorm (the same figure
    as on the ReLU that follows it: where the ReLU outputs zero, no gradient reaches the BatchNorm)
    and of every conv/linear layer; a group scores a channel by its BatchNorm outputs when it has
    any, else by its conv/linear outputs, summed over coupled layers (a residual addition's channels).

    Example:
        >>> importance = FisherImportance()
        >>> importance.accumulate(model, [(images, labels)])  # images in [0, 1], (B, C, H, W)
        >>> pruner = tp.pruner.MetaPruner(model[1], example, importance=importance, pruning_ratio=0.5)
        >>> pruner.step()
    """

    _LAYERS = (nn.modules.batchnorm._BatchNorm, nn.Conv2d, nn.Linear)
    _OUTPUTS = (tp.prune_batchnorm_out_channels, tp.prune_conv_out_channels, tp.prune_linear_out_channels)

    def __init__(self) -> None:
        self.scores: dict[nn.Module, torch.Tensor] = {}  # layer -> Delta per output channel, (C,)

    def accumulate(self, model: nn.Module, batches: Any) -> dict[nn.Module, torch.Tensor]:
        """Measure every layer's channel Fisher on ``(inputs, labels)`` batches; replaces earlier scores."""
        squares: dict[nn.Module, torch.Tensor] = {}

        def keep(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            def on_grad(grad: torch.Tensor) -> None:
                # Read at backward time: an in-place ReLU after a BatchNorm has rewritten `output`.
                per_image = (output.detach() * grad).flatten(2).sum(2) if grad.dim() > 2 else output.detach() * grad
                squares[module] = squares.get(module, 0) + per_image.double().pow(2).sum(0)  # (C,)
            if output.requires_grad:
                output.register_hook(on_grad)

        layers = [m for m in model.modules() if isinstance(m, self._LAYERS)]
        handles = [m.register_forward_hook(keep) for m in layers]
        was_training, count = model.training, 0
        model.eval()  # running BatchNorm statistics: each image's loss depends on that image only
        try:
            with torch.enable_grad():
                for inputs, labels in batches:
                    # summed, not averaged: the gradient reaching image n's activations is dL_n/da
                    loss = nn.functional.cross_entropy(model(inputs), labels, reduction="sum")
                    loss.backward()
                    count += len(labels)
        finally:
            for handle in handles:
                handle.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        self.scores = {m: (total / (2 * max(count, 1))).float() for m, total in squares.items()}
        return self.scores

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        found: list[tuple[bool, torch.Tensor, list[int]]] = []
        for i, (dep, idxs) in enumerate(group):
            layer, root = dep.layer, group[i].root_idxs
            if dep.pruning_fn in self._OUTPUTS and layer in self.scores and None not in root:
                found.append((isinstance(layer, nn.modules.batchnorm._BatchNorm), self.scores[layer][idxs], root))
        use_norm = any(is_norm for is_norm, _, _ in found)
        found = [(scores, root) for is_norm, scores, root in found if is_norm == use_norm]
        if not found:
            return None  # torch-pruning leaves a group without scores alone
        total = torch.zeros(len(group[0].root_idxs))  # one score per channel of the group's root layer
        for scores, root in found:
            total.scatter_add_(0, torch.tensor(root), scores.cpu())
        return total
