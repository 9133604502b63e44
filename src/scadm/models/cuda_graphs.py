"""CUDA graphs for fixed-shape sampling: every step of an edit launches the same kernels on the
same shapes, so one captured UNet step is replayed with the new latent and timestep features
copied into its input buffers, without Python or a launch per kernel (at batch 1 a step of the
face model is launch-bound on a large GPU).

`CUDAGraphedUNet(unet)(x, t, condition=...)` computes what `unet(x, t, condition=...)` does. A new
condition of the same shapes and flags is copied into the captured one; other shapes or flags,
other weights (a move, a new dtype) capture again. Calls without a prepared condition
(training, the authors' execution) go to the UNet itself. CUDA only: elsewhere one InputError.
"""

from __future__ import annotations

import torch
from torch import nn

from scadm.errors import InputError
from scadm.models.unet import SCADMUNet, UNetCondition

#: forward passes on a side stream before capture (torch.cuda.graphs' advice: lazy initialisation
#: and cuDNN/cuBLAS autotuning must happen outside the graph)
WARMUP_ITERS = 3


def check_cuda(device: torch.device, what: str = "cuda_graphs") -> None:
    if device.type != "cuda":
        raise InputError(f"{what}: CUDA graphs need a CUDA device, the model is on {device.type}")


def tensors(tree) -> list[torch.Tensor]:
    """The tensors of a condition's nested lists and tuples, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in tensors(item)]
    return []


def graph_key(x: torch.Tensor, features: torch.Tensor, condition: UNetCondition) -> tuple:
    """What a captured step is valid for: every input's shape and dtype, and the condition's
    non-tensor leaves (one-hot flags, empty slots), which choose the kernels."""

    def leaves(tree) -> list:
        if isinstance(tree, (list, tuple)):
            return [leaf for item in tree for leaf in leaves(item)]
        if isinstance(tree, torch.Tensor):
            return [(tuple(tree.shape), tree.dtype)]
        return [tree]

    return (*leaves([x, features, condition.context]), condition.size, *leaves(condition.steps))


def weights_key(unet: nn.Module) -> tuple:
    """The storage of every parameter and buffer: a graph replays the addresses it captured."""
    return tuple((t.data_ptr(), t.dtype) for t in (*unet.parameters(), *unet.buffers()))


class CUDAGraphedUNet:
    """A SCADMUNet whose sampler steps replay one captured CUDA graph (a callable like the UNet;
    not a module of its own: moving or casting is the UNet's business, and recaptures)."""

    def __init__(self, unet: SCADMUNet):
        check_cuda(unet.device)
        self.unet = unet
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple = ()
        self.weights: tuple = ()
        self.source: UNetCondition | None = None  # the condition last copied in
        self.buffers_in: list = []
        self.x_in = self.features_in = self.out = torch.empty(0)

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def condition(self, *args, **kwargs) -> UNetCondition:
        return self.unet.condition(*args, **kwargs)

    def reset(self) -> None:
        """Drop the captured graph (its memory pool goes with it)."""
        self.graph = None

    def __call__(self, x, t, context=None, mask=None, *, condition: UNetCondition | None = None, hard=None):
        if condition is None:
            return self.unet(x, t, context, mask, hard=hard)
        check_cuda(x.device)
        features = self.unet.time_features(self.unet._check_inputs(x, t))
        key = graph_key(x, features, condition)
        new_edit = self.graph is not None and condition is not self.source
        if self.graph is None or key != self.key or (new_edit and self.weights != weights_key(self.unet)):
            self._capture(x, features, condition, key)
        elif new_edit:  # an edit of the same shapes: its values into the graph's buffers
            for dst, src in zip(tensors(self.buffers_in), tensors([condition.context, condition.steps]), strict=True):
                dst.copy_(src)
            self.source = condition
        self.x_in.copy_(x)
        self.features_in.copy_(features)
        assert self.graph is not None
        self.graph.replay()
        return self.out.clone()

    def _capture(self, x, features, condition: UNetCondition, key) -> None:
        self.graph = None  # free the old pool first
        context, steps = _clone(condition.context), _clone(condition.steps)
        self.buffers_in = [context, steps]  # the graph's own: the caller's condition is never written
        static = UNetCondition(context, condition.size, steps)
        self.x_in, self.features_in = x.clone(), features.clone()
        self.key, self.source, self.weights = key, condition, weights_key(self.unet)
        stream = torch.cuda.Stream(x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_ITERS):
                self.unet.denoise(self.x_in, self.features_in, static)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self.unet.denoise(self.x_in, self.features_in, static)
        self.graph = graph


def _clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(item) for item in tree)
    return tree
