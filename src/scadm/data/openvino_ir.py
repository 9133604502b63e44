"""A torch interpreter of OpenVINO IR (v10/v11 .xml + .bin), for the op types MobileStyleGAN uses.

Why hand-written: the realistic-face generator (scadm.data.mobilestylegan) ships only as OpenVINO
IR, and a GPU machine may have torch but no OpenVINO. No maintained IR -> torch converter exists
(openvino converts *to* IR; onnx2torch needs ONNX). The IR is a plain graph: layers with typed
attributes, constants as byte ranges of the .bin, and edges between numbered ports. Evaluating it
op by op with torch.nn.functional gives OpenVINO's results up to float rounding (tested against
OpenVINO in tests/test_stylegan_faces.py).

Shape ops (ShapeOf, Gather, Concat, ...) run on small CPU int64 tensors, so the batch size is
free: the graph's Reshape targets are computed from the input's shape, not baked in.

>>> net = IRNetwork.load("SynthesisNetwork.xml", "SynthesisNetwork.bin")   # doctest: +SKIP
>>> net(style=torch.randn(2, 512))["img"].shape                            # doctest: +SKIP
torch.Size([2, 3, 1024, 1024])
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scadm.errors import CheckpointError

DTYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text.strip() else []


def _conv_padding(data: dict, op: str) -> tuple[int, ...]:
    begin, end = _ints(data["pads_begin"]), _ints(data["pads_end"])
    if begin != end or data.get("auto_pad", "explicit") != "explicit":
        raise CheckpointError(f"{op}: asymmetric or automatic padding is not supported")
    return tuple(begin)


def _conv_options(data: dict, op: str) -> dict[str, Any]:
    """The IR's Convolution attributes as torch's arguments, the same for all three conv ops."""
    return {"stride": _ints(data["strides"]), "padding": _conv_padding(data, op), "dilation": _ints(data["dilations"])}


def _conv(x, w, data, op):
    return F.conv2d(x, w, **_conv_options(data, op))


def _group_conv(x, w, data, op):  # w: (G, O/G, I/G, kh, kw)
    return F.conv2d(x, w.flatten(0, 1), groups=w.shape[0], **_conv_options(data, op))


def _group_conv_transpose(x, w, data, op):  # w: (G, I/G, O/G, kh, kw)
    output_padding = _ints(data.get("output_padding", "0, 0"))
    return F.conv_transpose2d(
        x, w.flatten(0, 1), groups=w.shape[0], output_padding=output_padding, **_conv_options(data, op)
    )


def _matmul(a, b, data, op):
    if data.get("transpose_a") == "true":
        a = a.transpose(-1, -2)
    if data.get("transpose_b") == "true":
        b = b.transpose(-1, -2)
    return a @ b


def _prelu(x, slope, data, op):
    if slope.numel() > 1 and x.dim() > 1:  # per-channel slopes along axis 1
        slope = slope.reshape(-1, *([1] * (x.dim() - 2)))
    return torch.where(x >= 0, x, x * slope)


def _reshape(x, shape, data, op):
    target = shape.tolist()
    if data.get("special_zero") == "true":
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _axes(axes, rank: int) -> list[int]:
    return sorted(a + rank if a < 0 else a for a in axes.reshape(-1).tolist())


def _unsqueeze(x, axes, data, op):
    for a in _axes(axes, x.dim() + axes.numel()):
        x = x.unsqueeze(a)
    return x


def _squeeze(x, axes=None, data=None, op=None):
    if axes is None:
        return x.squeeze()
    for a in reversed(_axes(axes, x.dim())):
        x = x.squeeze(a)
    return x


def _gather(x, indices, axis, data, op):
    axis = int(axis)
    axis = axis + x.dim() if axis < 0 else axis
    indices = indices.to(x.device)
    indices = torch.where(indices < 0, indices + x.shape[axis], indices)
    out = x.index_select(axis, indices.reshape(-1))
    return out.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


def _variadic_split(x, axis, lengths, data, op):
    axis, lengths = int(axis), lengths.tolist()
    if -1 in lengths:
        lengths[lengths.index(-1)] = x.shape[axis] - (sum(lengths) + 1)
    return tuple(x.split(lengths, dim=axis))


def _broadcast(x, shape, data, op):
    target = shape.tolist()
    if data.get("mode") == "bidirectional":
        target = torch.broadcast_shapes(tuple(x.shape), tuple(target))
    elif data.get("mode") not in (None, "numpy"):
        raise CheckpointError(f"{op}: Broadcast mode {data['mode']!r} is not supported")
    return x.expand(*target)


def _tile(x, repeats, data, op):
    return x.tile(repeats.tolist())


def _shape_of(x, data, op):
    return torch.tensor(x.shape, dtype=torch.int64)


def _reduce_mean(x, axes, data, op):
    return x.mean(dim=_axes(axes, x.dim()), keepdim=data.get("keep_dims") == "true")


def _concat(*inputs, data, op):
    device = next((t.device for t in inputs if t.is_floating_point()), inputs[0].device)
    return torch.cat([t.to(device) for t in inputs], dim=int(data["axis"]))


OPS: dict[str, Callable[..., Any]] = {
    "Convolution": _conv,
    "GroupConvolution": _group_conv,
    "GroupConvolutionBackpropData": _group_conv_transpose,
    "MatMul": _matmul,
    "PReLU": _prelu,
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "VariadicSplit": _variadic_split,
    "Broadcast": _broadcast,
    "Tile": _tile,
    "ShapeOf": _shape_of,
    "ReduceMean": _reduce_mean,
    "Concat": _concat,
    "Add": lambda a, b, data, op: a + b.to(a.device),
    "Multiply": lambda a, b, data, op: a * b.to(a.device),
    "Power": lambda a, b, data, op: torch.pow(a, b.to(a.device)),
}


class IRNetwork(nn.Module):
    """An OpenVINO IR graph as a torch module: forward(**inputs by Parameter name) returns
    {Result name: tensor}. Float constants are buffers (they follow .to(device)); integer
    constants stay on the CPU as shape arithmetic."""

    def __init__(
        self, layers: list[dict], edges: dict[tuple[int, int], tuple[int, int]], constants: dict[int, torch.Tensor]
    ):
        super().__init__()
        self.layers = layers
        self.ports = defaultdict(list)  # layer id -> [(input port, (source layer, source port))]
        for (to_layer, to_port), source in edges.items():
            self.ports[to_layer].append((to_port, source))
        self.float_ids = [i for i, t in constants.items() if t.is_floating_point()]
        for i in self.float_ids:
            self.register_buffer(f"c{i}", constants[i])
        self.int_constants = {i: t for i, t in constants.items() if not t.is_floating_point()}

    @classmethod
    def load(cls, xml_path: str | Path, bin_path: str | Path) -> IRNetwork:
        """From the IR's .xml (the graph) and .bin (its constants)."""
        try:
            root = ET.parse(xml_path).getroot()
            blob = Path(bin_path).read_bytes()
        except (OSError, ET.ParseError) as e:
            raise CheckpointError(f"{xml_path}: cannot read the OpenVINO IR ({e})") from None
        layers: list[dict[str, Any]] = []
        constants: dict[int, torch.Tensor] = {}
        for layer in root.iter("layer"):
            found = layer.find("data")
            data = dict(found.attrib) if found is not None else {}
            outputs = layer.find("output")
            entry: dict[str, Any] = {
                "id": int(layer.attrib["id"]),
                "type": layer.attrib["type"],
                "name": layer.attrib.get("name", ""),
                "data": data,
                "outputs": [int(p.attrib["id"]) for p in outputs] if outputs is not None else [],
            }
            if entry["type"] == "Const":
                dtype = DTYPES.get(data["element_type"])
                if dtype is None:
                    raise CheckpointError(f"{xml_path}: constant type {data['element_type']} is not supported")
                start, size = int(data["offset"]), int(data["size"])
                array = np.frombuffer(blob, dtype, size // np.dtype(dtype).itemsize, start)
                shape = _ints(data.get("shape", ""))
                constants[entry["id"]] = torch.from_numpy(array.reshape(shape).copy())
            elif entry["type"] not in OPS and entry["type"] not in ("Parameter", "Result"):
                raise CheckpointError(f"{xml_path}: op {entry['type']} is not supported")
            layers.append(entry)
        links = root.find("edges")
        if links is None:
            raise CheckpointError(f"{xml_path}: no <edges>: not an OpenVINO IR")
        edges = {
            (int(e.attrib["to-layer"]), int(e.attrib["to-port"])): (
                int(e.attrib["from-layer"]),
                int(e.attrib["from-port"]),
            )
            for e in links
        }
        return cls(_topological(layers, edges), edges, constants)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run(inputs)

    def run(self, inputs: dict[str, torch.Tensor], until: str | None = None) -> dict[str, torch.Tensor]:
        """{Result name: tensor}; with `until`, only what the layer of that name needs is
        computed and {until: its first output} returned (to check a part of a graph)."""
        layers = self.layers if until is None else self._ancestors(until)
        values: dict[tuple[int, int], torch.Tensor] = {}
        consts = {i: getattr(self, f"c{i}") for i in self.float_ids} | self.int_constants
        outputs = {}
        last_use = {source: n for n, layer in enumerate(layers) for _, source in self.ports[layer["id"]]}
        for n, layer in enumerate(layers):
            i, kind = layer["id"], layer["type"]
            args = [values[source] for _, source in sorted(self.ports[i])]
            for _, source in self.ports[i]:  # free what no later layer reads: at 1024 px each
                if last_use[source] == n:  # activation is ~0.3 GB per face
                    values.pop(source, None)
            if kind == "Const":
                values[(i, layer["outputs"][0])] = consts[i]
            elif kind == "Parameter":
                values[(i, layer["outputs"][0])] = inputs[layer["name"]]
            elif kind == "Result":
                outputs[layer["name"].split("/sink_port")[0]] = args[0]
            else:
                out = OPS[kind](*args, data=layer["data"], op=layer["name"])
                out = out if isinstance(out, tuple) else (out,)
                values.update(((i, port), t) for port, t in zip(layer["outputs"], out, strict=True))
        if until is not None:
            last = layers[-1]
            return {until: values[(last["id"], last["outputs"][0])]}
        return outputs

    def _ancestors(self, name: str) -> list[dict]:
        target = next((layer["id"] for layer in self.layers if layer["name"] == name), None)
        if target is None:
            raise CheckpointError(f"no layer named {name!r} in this IR")
        needed, stack = set(), [target]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(src for _, (src, _) in self.ports[node])
        return [layer for layer in self.layers if layer["id"] in needed]


def _topological(layers: list[dict], edges: dict) -> list[dict]:
    """Layers ordered so every input is computed before it is used."""
    deps = defaultdict(set)
    for (to_layer, _), (from_layer, _) in edges.items():
        deps[to_layer].add(from_layer)
    by_id, order, done = {layer["id"]: layer for layer in layers}, [], set()
    for start in by_id:
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in done:
                continue
            if expanded:
                done.add(node)
                order.append(by_id[node])
                continue
            stack.append((node, True))
            stack.extend((d, False) for d in deps[node] if d not in done)
    return order
