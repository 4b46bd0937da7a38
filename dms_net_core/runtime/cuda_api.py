"""The few CUDA runtime calls the TensorRT backend needs, over cuda-python or pycuda.

TensorRT's Python API leaves memory to the caller. NVIDIA's samples (``common_runtime.py``)
use cuda-python's ``cudart``; every call returns ``(err, *results)`` and each ``err`` must be
checked, which `_check` does. JetPack images sometimes ship pycuda instead, so `PyCudaApi`
offers the same five operations (untested here: no GPU and no pycuda on the build machine).

Host buffers are passed as integer addresses (``ndarray.ctypes.data``), which both
libraries accept for ``void*`` parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # legacy layout (cuda-python < 12.6)
    return cudart


class CudaPythonApi:
    """cuda-python (``cudart``) implementation."""

    library = "cuda-python"

    def __init__(self, cudart: Any | None = None) -> None:
        self.cudart = cudart or _import_cudart()
        self.h2d = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def _check(self, result: Any) -> Any:
        """``(err, *values)`` -> values, raising on any error code (as NVIDIA's cuda_call does)."""
        if isinstance(result, tuple):
            err, values = result[0], result[1:]
        else:
            err, values = result, ()
        if err != self.cudart.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise RuntimeError(f"CUDA runtime error {name}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_info(self) -> DeviceInfo:
        device = self._check(self.cudart.cudaGetDevice())
        props = self._check(self.cudart.cudaGetDeviceProperties(device))
        name = props.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(str(name).strip(), f"{props.major}.{props.minor}")

    def stream_create(self) -> Any:
        return self._check(self.cudart.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamDestroy(stream))

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._check(self.cudart.cudaFree(ptr))

    def memcpy_htod_async(self, device_ptr: int, host_ptr: int, nbytes: int, stream: Any) -> None:
        self._check(self.cudart.cudaMemcpyAsync(device_ptr, host_ptr, nbytes, self.h2d, stream))

    def memcpy_dtoh_async(self, host_ptr: int, device_ptr: int, nbytes: int, stream: Any) -> None:
        self._check(self.cudart.cudaMemcpyAsync(host_ptr, device_ptr, nbytes, self.d2h, stream))


class PyCudaApi:  # pragma: no cover - needs pycuda and a GPU
    """pycuda fallback with the same surface (pycuda raises on errors itself)."""

    library = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401 - creates the context
        import pycuda.driver as cuda

        self.cuda = cuda
        self._allocs: dict[int, Any] = {}

    def device_info(self) -> DeviceInfo:
        dev = self.cuda.Context.get_device()
        major, minor = dev.compute_capability()
        return DeviceInfo(dev.name(), f"{major}.{minor}")

    def stream_create(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        pass

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def memcpy_htod_async(self, device_ptr: int, host_ptr: int, nbytes: int, stream: Any) -> None:
        import ctypes

        buf = (ctypes.c_char * nbytes).from_address(host_ptr)
        self.cuda.memcpy_htod_async(device_ptr, buf, stream)

    def memcpy_dtoh_async(self, host_ptr: int, device_ptr: int, nbytes: int, stream: Any) -> None:
        import ctypes

        buf = (ctypes.c_char * nbytes).from_address(host_ptr)
        self.cuda.memcpy_dtoh_async(buf, device_ptr, stream)


def load_cuda_api() -> CudaPythonApi | PyCudaApi:
    """cuda-python when importable, else pycuda; ImportError naming both when neither is."""
    try:
        return CudaPythonApi()
    except ImportError:
        pass
    try:
        return PyCudaApi()
    except ImportError:
        raise ImportError("neither cuda-python nor pycuda is installed: pip install cuda-python", name="cuda") from None
