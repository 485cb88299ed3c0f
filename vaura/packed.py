"""CPU inference with linear weights pre-packed for oneDNN.

A cached decode step multiplies 2 S rows (CFG batch) by every weight matrix of the model, so on a CPU it is bound
by how fast the weights stream from memory. MKL's ``sgemm``, which `torch.nn.functional.linear` calls, reads them
at about half the machine's bandwidth for such thin products; oneDNN's inner product on a weight reordered once into
its blocked layout reads them about 1.5x faster (``scripts/bench_sampler.py`` measures it). `pack_linears` swaps
every `torch.nn.Linear` of a model for a `PackedLinear` holding that layout, in place; the model's state dict keys,
shapes and values are unchanged (the packed weight is unpacked exactly when saved), and `unpack_linears` restores
plain `torch.nn.Linear` modules.

The products are the same fp32 dot products summed in another order, so outputs differ from `F.linear` by float
rounding only (relative ~1e-6). A packed model is for inference: putting it in training mode, calling it with
gradients enabled on an input or bias that requires grad (oneDNN's op has no backward), moving it to another
dtype or device and ``share_memory()`` raise `ConfigError` (raised when `torch.nn.Module._apply` reaches the
first packed layer: modules it visits before are already converted; in the V-AURA transformer that layer comes
first). `copy.deepcopy` and ``torch.save(model)`` work (the dense weight is pickled and packed again on load).
The packed weight is not a parameter: ``model.parameters()`` leaves it out, and ``state_dict(keep_vars=True)``
gives a plain tensor copy of it, not an `nn.Parameter`. Only modules of exactly type `torch.nn.Linear` are
packed (subclasses, such as attention's ``out_proj``, whose weight other code reads, stay plain).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

from visualsound.errors import ConfigError

log = logging.getLogger(__name__)


def packing_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) with the linear packing ops."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinear(nn.Module):
    """A bias-free or biased fp32 CPU linear layer ``x [..., in] -> [..., out]`` whose weight ``[out, in]`` is kept
    in oneDNN's blocked layout (reordered for products with about `rows` rows; any row count works)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int = 2) -> None:
        super().__init__()
        _check_packable("weight", weight)
        assert weight.dim() == 2, f"a linear weight is [out, in], got {tuple(weight.shape)}"
        self.in_features, self.out_features, self.rows = weight.shape[1], weight.shape[0], rows
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == self.in_features, (
            f"PackedLinear expects [..., {self.in_features}], got {tuple(x.shape)}")
        if torch.is_grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad)):
            # oneDNN's packed product has no backward: autograd would silently give no gradient
            raise ConfigError("packed linear weights have no gradient: run under torch.no_grad() / "
                              "torch.inference_mode(), or call vaura.packed.unpack_linears(model) first")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def weight_dense(self) -> torch.Tensor:
        """The weight ``[out, in]`` in plain layout (exactly the packed values)."""
        return self.packed.to_dense()

    def train(self, mode: bool = True) -> PackedLinear:
        if mode:
            raise ConfigError("a model with packed linear weights is for inference only: "
                              "call vaura.packed.unpack_linears(model) before training")
        return super().train(False)

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        probe = fn(torch.zeros(1))  # .to / .cuda / .half / ... as applied to an fp32 CPU tensor
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise ConfigError(f"packed linear weights stay fp32 on the CPU (asked for {probe.dtype} on "
                              f"{probe.device}): call vaura.packed.unpack_linears(model) first")
        if probe.is_shared():  # .share_memory(): oneDNN's opaque packed tensor has no storage to share
            raise ConfigError("packed linear weights cannot be moved to shared memory: call "
                              "vaura.packed.unpack_linears(model) first")
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (`copy.deepcopy`, ``torch.save(model)``) stores the dense weight; oneDNN's opaque tensor has
        no storage to pickle."""
        state = self.__dict__.copy()
        state["packed"] = self.weight_dense()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.packed.contiguous(), self.rows)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        own = {"weight": (self.out_features, self.in_features)}
        if self.bias is not None:
            own["bias"] = (self.out_features,)
        new: dict[str, torch.Tensor] = {}
        for name, shape in own.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
            elif tuple(state_dict[key].shape) != shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(state_dict[key].shape)} from checkpoint, the shape in current model is "
                                  f"{shape}.")
            else:
                new[name] = state_dict[key].detach()
        if strict:  # as nn.Module (load_state_dict passes strict=True here and raises only if asked to)
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in own)
        if "weight" in new:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(new["weight"].float().contiguous(), self.rows)
        if "bias" in new:
            with torch.no_grad():
                self.bias.copy_(new["bias"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def child_slots(model: nn.Module, kind: type) -> list[tuple[nn.Module, str]]:
    """``(parent, attribute name)`` of every child module of exactly type `kind` (no references to the children
    themselves, so that each can be released as soon as it is replaced)."""
    return [(parent, name) for parent in model.modules() for name, child in parent.named_children()
            if type(child) is kind]


def _check_packable(name: str, weight: torch.Tensor) -> None:
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise ConfigError(f"packing is for fp32 models on the CPU; {name} is {weight.dtype} on {weight.device}")


def pack_linears(model: nn.Module, rows: int = 2) -> int:
    """Swap every `torch.nn.Linear` of `model` (fp32, on the CPU) for a `PackedLinear`, in place, one at a time
    (each plain weight is released once its packed copy exists, so peak memory grows by one matrix); puts the
    model in eval mode. Returns how many layers were packed. Raises `ConfigError` where packing cannot apply.
    """
    if not packing_available():
        raise ConfigError("this torch build has no oneDNN (mkldnn) linear packing; run without packing")
    found = child_slots(model, nn.Linear)
    for parent, name in found:
        _check_packable(name, getattr(parent, name).weight)
    model.eval()
    for parent, name in found:
        lin = getattr(parent, name)
        setattr(parent, name, PackedLinear(lin.weight, lin.bias, rows))
        del lin  # the last reference to the plain weight (unless the caller holds one)
    log.info("packed %d linear layers for oneDNN (rows %d)", len(found), rows)
    return len(found)


def unpack_linears(model: nn.Module) -> int:
    """Undo `pack_linears`: every `PackedLinear` becomes a plain `torch.nn.Linear` with the same values."""
    found = child_slots(model, PackedLinear)
    for parent, name in found:
        packed = getattr(parent, name)
        # built on the meta device: no throw-away initialisation, the weight is the one dense copy
        lin = nn.Linear(packed.in_features, packed.out_features, bias=packed.bias is not None, device="meta")
        lin.weight = nn.Parameter(packed.weight_dense())
        if packed.bias is not None:
            lin.bias = nn.Parameter(packed.bias.detach().clone())
        setattr(parent, name, lin)
    return len(found)


def is_packed(model: nn.Module) -> bool:
    """Whether any layer of `model` is a `PackedLinear`."""
    return any(isinstance(m, PackedLinear) for m in model.modules())
