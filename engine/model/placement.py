"""Where the model runs: a device (`auto` | `cpu` | `cuda` | `cuda:N`) and a dtype (`float32` | `float16` | `bfloat16`).

The engine's settings (`engine.device`, `engine.dtype`) name them; `resolve_placement` turns the names into torch
objects (refusing what cannot work, with the reason), `building_on` builds a model directly there (a 7B model
is not first built in float32 on the CPU), and `place` moves a built one. The default, cpu + float32, changes
nothing: the model is built and run exactly as without placement.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class PlacementError(ValueError):
    """A device or dtype that cannot be used here; the message says why and what to set instead."""


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    @property
    def is_default(self) -> bool:
        """cpu + float32: the model as built, nothing to move."""
        return self.device.type == "cpu" and self.dtype == torch.float32

    def __str__(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}"


def check_device_name(name: str) -> str:
    if not DEVICE_PATTERN.match(name):
        raise PlacementError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def check_dtype_name(name: str) -> str:
    if name not in DTYPES:
        raise PlacementError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """`auto`: the first CUDA device when torch sees one, else the CPU. A CUDA device that is not there is refused."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PlacementError(f"device {name!r}: torch sees no CUDA device (torch {torch.__version__}); "
                                 "use device: cpu or auto")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise PlacementError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        device = torch.device("cuda", index)
    return device


def resolve_placement(device: str = "cpu", dtype: str = "float32") -> Placement:
    """Names -> torch objects. float16 on the CPU is refused (slow or unsupported kernels, and float16's range
    overflows the LLM's activations): use bfloat16 there."""
    dev = resolve_device(device)
    check_dtype_name(dtype)
    if dev.type == "cpu" and dtype == "float16":
        raise PlacementError(f"dtype float16 on the CPU (device {device!r} resolved to cpu) is not supported: "
                             "use bfloat16 (or float32) on a CPU, float16 only on CUDA")
    return Placement(dev, DTYPES[dtype])


@contextlib.contextmanager
def building_on(placement: Placement) -> Iterator[None]:
    """Modules and tensors created inside are created on `placement.device` in `placement.dtype` (floating point
    only): a large model is initialised where it will run, at its final size. No-op for cpu + float32."""
    if placement.is_default:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(placement.dtype)
    try:
        with torch.device(placement.device):
            yield
    finally:
        torch.set_default_dtype(previous)


def place(model: torch.nn.Module, placement: Placement) -> torch.nn.Module:
    """The model's parameters and buffers on the placement (floating ones in its dtype). No-op for cpu + float32."""
    if placement.is_default:
        return model
    return model.to(device=placement.device, dtype=placement.dtype)


def placement_of(model: torch.nn.Module) -> Placement:
    """Where a model's parameters are (the first floating one decides)."""
    p = next((t for t in model.parameters() if t.is_floating_point()), None)
    if p is None:
        return Placement(torch.device("cpu"), torch.float32)
    return Placement(p.device, p.dtype)
