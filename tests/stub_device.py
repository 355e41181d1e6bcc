"""A stand-in accelerator for CPU-only CI: tensors that hold real CPU data but report another device,
with CUDA's device rules enforced on every operation, so a loop that mixes host and accelerator
tensors fails here as it would on the first GPU batch.

    with stub_device() as device:                     # device == torch.device("meta")
        model = model.to(device)                      # parameters become stub tensors (real values)
        x = pixels.to(device)
        adv = make_attack("pgd", seed=0).perturb(model, x, labels.to(device)).pixels
        torch.zeros(3) + adv                          # raises StubDeviceMismatch, as CUDA would

How: `StubTensor` is a wrapper subclass around a CPU tensor whose `.device` is `meta` (the one
non-CPU device every torch build has a device guard for); `_StubMode` (a dispatch mode) sees every
aten op, creates stub tensors for factories asked for the stub device (`torch.zeros(..., device=x.device)`),
moves tensors with `.to(device)`, and checks each op's tensor arguments with CUDA's rule: one device
for all of them, except CPU 0-dim tensors, which may be *inputs* of an accelerator op (never the
tensor an in-place op writes into), the indices of an indexing op, and the source of `copy_`.
`torch.Generator(device=stub)` gives a CPU generator marked as the stub's; a factory on one
device with a generator of the other fails, as on CUDA. `.numpy()` of a stub tensor fails, as on
CUDA. While active, `torch.Generator`, `torch.tensor`, `torch.as_tensor` (which build their tensor
below the dispatch modes) and `torch.is_autocast_enabled` are patched; all is restored on exit.
Values are the CPU results, up to last-bit rounding where autograd decomposes an op for a tensor
subclass. Not modelled: autocast (the stub device has none), several devices, streams.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

STUB = torch.device("meta")
CPU = torch.device("cpu")
_aten = torch.ops.aten
# ops whose tensor arguments may legitimately live on different devices
_MOVE_OPS = {_aten._to_copy.default, _aten.lift_fresh.default, _aten.lift_fresh_copy.default}
_INDEX_OPS = {_aten.index.Tensor, _aten.index_put_.default, _aten.index_put.default, _aten._unsafe_index.Tensor,
              _aten._index_put_impl_.default}


class StubDeviceMismatch(RuntimeError):
    """An op mixed tensors of the stub accelerator and the CPU the way CUDA refuses."""


class StubTensor(torch.Tensor):
    """Real CPU values (`.elem`) that report the stub accelerator as their device."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
                                                   dtype=elem.dtype, layout=elem.layout, device=STUB, requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    def __repr__(self) -> str:
        return f"StubTensor({self.elem!r})"

    def tolist(self):  # a host copy, legal on CUDA too
        return self.elem.tolist()

    def numpy(self, *, force: bool = False):
        raise StubDeviceMismatch("can't convert an accelerator tensor to numpy (on a GPU: \"can't convert cuda:0 device "
                                 "type tensor to numpy\"); copy it to the host with .cpu() first.")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


class _StubGenerator:
    """`torch.Generator` replacement while the stub is active: a stub-device request gives a CPU
    generator tagged as the stub's (a real `torch.Generator`, so isinstance checks still hold)."""

    def __new__(cls, device="cpu"):
        device = torch.device(device)
        if device.type != STUB.type:
            return _REAL_GENERATOR(device=device)
        # The object an op receives is the generator's cached Python wrapper, made on its first trip
        # through the dispatcher: hand the caller that same object, so the mode recognises it by id.
        # (The cached wrapper lasts while the generator made here is alive: both are kept.)
        made, catch = _REAL_GENERATOR(device="cpu"), _Catch()
        with catch:
            torch.empty(0).uniform_(generator=made)
        _STUB_GENERATORS[id(catch.generator)] = (catch.generator, made)
        return catch.generator


class _Catch(TorchDispatchMode):
    generator = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.generator = (kwargs or {}).get("generator")
        return func(*args, **(kwargs or {}))


_REAL_GENERATOR = torch.Generator
_STUB_GENERATORS: dict[int, tuple] = {}  # id -> (generator, its first wrapper): kept alive, so ids stay unique


def _device_of(t: torch.Tensor) -> torch.device:
    return STUB if isinstance(t, StubTensor) else t.device


def _unwrap(x):
    return x.elem if isinstance(x, StubTensor) else x


def _mutated_args(func, args, kwargs) -> list[torch.Tensor]:
    out = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            if isinstance(value, torch.Tensor):
                out.append(value)
    return out


def _check(func, args, kwargs) -> torch.device | None:
    """The device the op runs on (None: no tensor argument), or `StubDeviceMismatch`."""
    checked_args = args
    if func in _INDEX_OPS:  # CPU indices into an accelerator tensor are allowed
        checked_args = (args[0], *args[2:])
    mutated = {id(t) for t in _mutated_args(func, args, kwargs)}
    tensors = [t for t in tree_flatten((checked_args, kwargs))[0] if isinstance(t, torch.Tensor)]
    devices = {_device_of(t) for t in tensors if not (_device_of(t) == CPU and t.dim() == 0 and id(t) not in mutated)}
    if not devices:
        return _device_of(tensors[0]) if tensors else None
    if len(devices) > 1:
        shapes = ", ".join(f"{_device_of(t).type}{list(t.shape)}" for t in tensors)
        raise StubDeviceMismatch(f"{func}: tensors on several devices ({shapes}); on a GPU this raises "
                                 "'Expected all tensors to be on the same device'.")
    return devices.pop()


def _returned_in_place(func, args, kwargs):
    """In-place ops return the tensor they wrote into: the caller's object, not a new wrapper."""
    returns = func._schema.returns
    if returns and all(r.alias_info is not None and r.alias_info.is_write for r in returns):
        mutated = _mutated_args(func, args, kwargs)
        return mutated[0] if len(returns) == 1 else tuple(mutated[: len(returns)])
    return None


def _dispatch(func, args, kwargs):
    requested = torch.device(kwargs["device"]) if kwargs.get("device") is not None else None
    if func in _MOVE_OPS:
        target = requested or _device_of(args[0])
    elif func is _aten.copy_.default:
        target = _device_of(args[0])  # copies across devices are fine; the result is the destination
    else:
        target = requested or _check(func, args, kwargs) or CPU
    generator = kwargs.get("generator")
    if generator is not None and (id(generator) in _STUB_GENERATORS) != (target == STUB):
        raise StubDeviceMismatch(f"{func}: a {'stub' if id(generator) in _STUB_GENERATORS else 'cpu'} generator for a "
                                 f"{target.type} tensor; on a GPU this raises \"Expected a '{target.type}' device type for generator\".")
    if requested == STUB:
        kwargs = {**kwargs, "device": CPU}
    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
    in_place = _returned_in_place(func, args, kwargs)
    if in_place is not None:
        return in_place
    if target != STUB:
        return out
    return tree_map(lambda x: StubTensor(x) if isinstance(x, torch.Tensor) else x, out)


class _StubMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


@contextlib.contextmanager
def stub_device():
    """Activate the stub accelerator; yields its device (`meta`). Not thread-safe; tests only."""
    real_autocast_enabled = torch.is_autocast_enabled

    def is_autocast_enabled(device_type=None):  # the stub device has no autocast
        if device_type is None:
            return real_autocast_enabled()
        return False if torch.device(device_type).type == STUB.type else real_autocast_enabled(device_type)

    def from_data(real):  # `torch.tensor(data, device=...)` builds its tensor below the dispatch modes
        def make(data, *args, device=None, **kwargs):
            if device is not None and torch.device(device).type == STUB.type:
                return real(data, *args, **kwargs).to(STUB)
            return real(data, *args, device=device, **kwargs)

        return make

    saved = {name: getattr(torch, name) for name in ("Generator", "is_autocast_enabled", "tensor", "as_tensor")}
    torch.Generator, torch.is_autocast_enabled = _StubGenerator, is_autocast_enabled
    torch.tensor, torch.as_tensor = from_data(saved["tensor"]), from_data(saved["as_tensor"])
    try:
        with _StubMode():
            yield STUB
    finally:
        for name, value in saved.items():
            setattr(torch, name, value)
        _STUB_GENERATORS.clear()
