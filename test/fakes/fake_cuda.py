"""Test double of cuda-python's ``cudart`` (the calls the TensorRT backend makes), host-memory backed.

Real behaviour kept (where our code could get it wrong):

- every call returns a tuple ``(cudaError_t, *results)``; nothing raises, errors are codes;
- device pointers are integers that are NOT host addresses (they live above 2**60, which no
  x86-64/aarch64 user-space host pointer reaches), each backed by a ``bytearray``;
- ``cudaMemcpyAsync`` checks the kind against where each pointer lives (host->device must
  go to a device allocation from a host address, etc.) and that the byte count fits the
  allocation -> ``cudaErrorInvalidValue`` otherwise, as the driver reports; host memory is
  read/written at the given integer address with ctypes, so a wrong ``ndarray.ctypes.data``
  or a too-short host buffer is a real bug here too;
- ``cudaFree`` of an unknown pointer -> ``cudaErrorInvalidValue``; streams are objects
  convertible with ``int()`` (like ``cudaStream_t``), and unknown streams are rejected.

Not modelled: asynchrony (copies happen immediately), pinned memory, multiple devices.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import types
from dataclasses import dataclass

DEVICE_BASE = 1 << 60


class cudaError_t(enum.IntEnum):  # noqa: N801 - mirrors cuda-python
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:  # noqa: N801
    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:  # noqa: N802 - cuda-python name
        return self._handle


@dataclass
class cudaDeviceProp:  # noqa: N801
    name: bytes
    major: int
    minor: int
    totalGlobalMem: int = 8 << 30


class FakeCudaRuntime:
    """State of one fake GPU; `module()` exposes it as a ``cudart`` module object."""

    def __init__(self, gpu_name: str = "Orin (nvgpu)", compute_capability: tuple[int, int] = (8, 7),
                 memory_bytes: int = 1 << 30) -> None:
        self.gpu_name = gpu_name
        self.compute_capability = compute_capability
        self.memory_bytes = memory_bytes
        self.allocations: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self._next_ptr = DEVICE_BASE
        self._stream_ids = itertools.count(0x5000)
        self.memcpy_calls = 0

    # -- pointer helpers ----------------------------------------------------------------
    @staticmethod
    def is_device(ptr: int) -> bool:
        return ptr >= DEVICE_BASE

    def find(self, ptr: int, nbytes: int) -> tuple[bytearray, int] | None:
        """The allocation containing [ptr, ptr+nbytes), with the offset; None if out of bounds."""
        for base, buf in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + len(buf):
                return buf, ptr - base
        return None

    def read_device(self, ptr: int, nbytes: int) -> bytes:
        hit = self.find(ptr, nbytes)
        if hit is None:
            raise ValueError(f"device read of {nbytes} bytes at {ptr:#x} outside any allocation")
        buf, off = hit
        return bytes(buf[off : off + nbytes])

    def write_device(self, ptr: int, data: bytes) -> None:
        hit = self.find(ptr, len(data))
        if hit is None:
            raise ValueError(f"device write of {len(data)} bytes at {ptr:#x} outside any allocation")
        buf, off = hit
        buf[off : off + len(data)] = data

    @staticmethod
    def _host_address(obj) -> int | None:
        if isinstance(obj, int):
            return obj
        try:
            import numpy as np

            if isinstance(obj, np.ndarray):
                return obj.ctypes.data
        except ImportError:  # pragma: no cover
            pass
        return None

    # -- the cudart API -----------------------------------------------------------------
    def cudaGetDevice(self):  # noqa: N802
        return (cudaError_t.cudaSuccess, 0)

    def cudaGetDeviceProperties(self, device: int):  # noqa: N802
        if device != 0:
            return (cudaError_t.cudaErrorInvalidValue, None)
        major, minor = self.compute_capability
        # cuda-python returns the C char[256] array: NUL-padded bytes
        return (cudaError_t.cudaSuccess,
                cudaDeviceProp(self.gpu_name.encode().ljust(256, b"\0"), major, minor, self.memory_bytes))

    def cudaGetErrorString(self, err):  # noqa: N802
        return (cudaError_t.cudaSuccess, cudaError_t(err).name.encode())

    def cudaMalloc(self, size: int):  # noqa: N802
        if not isinstance(size, int) or size <= 0:
            return (cudaError_t.cudaErrorInvalidValue, 0)
        if sum(len(b) for b in self.allocations.values()) + size > self.memory_bytes:
            return (cudaError_t.cudaErrorMemoryAllocation, 0)
        ptr = self._next_ptr
        self._next_ptr += (size + 255) // 256 * 256 + 256
        self.allocations[ptr] = bytearray(size)
        return (cudaError_t.cudaSuccess, ptr)

    def cudaFree(self, ptr: int):  # noqa: N802
        if ptr not in self.allocations:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.allocations[ptr]
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        handle = next(self._stream_ids)
        self.streams.add(handle)
        return (cudaError_t.cudaSuccess, cudaStream_t(handle))

    def _stream_ok(self, stream) -> bool:
        return stream == 0 or int(stream) in self.streams

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (cudaError_t.cudaSuccess,) if self._stream_ok(stream) else (cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count: int, kind, stream):  # noqa: N802
        self.memcpy_calls += 1
        if not self._stream_ok(stream) or not isinstance(kind, cudaMemcpyKind):
            return (cudaError_t.cudaErrorInvalidValue,)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            host = self._host_address(src)
            if not isinstance(dst, int) or not self.is_device(dst) or host is None or self.is_device(host):
                return (cudaError_t.cudaErrorInvalidValue,)
            if self.find(dst, count) is None:
                return (cudaError_t.cudaErrorInvalidValue,)
            self.write_device(dst, ctypes.string_at(host, count))
            return (cudaError_t.cudaSuccess,)
        if kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            host = self._host_address(dst)
            if not isinstance(src, int) or not self.is_device(src) or host is None or self.is_device(host):
                return (cudaError_t.cudaErrorInvalidValue,)
            if self.find(src, count) is None:
                return (cudaError_t.cudaErrorInvalidValue,)
            ctypes.memmove(host, self.read_device(src, count), count)
            return (cudaError_t.cudaSuccess,)
        return (cudaError_t.cudaErrorInvalidValue,)  # the backend never needs other kinds

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("cuda.bindings.runtime")
        mod.cudaError_t = cudaError_t
        mod.cudaMemcpyKind = cudaMemcpyKind
        mod.cudaStream_t = cudaStream_t
        for name in dir(self):
            if name.startswith("cuda"):
                setattr(mod, name, getattr(self, name))
        mod.fake_state = self
        return mod
