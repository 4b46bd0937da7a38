"""Test double of the TensorRT Python API surface that dms_net_core.runtime uses.

Never on the import path by default: `install` injects ``tensorrt`` and cuda-python's
``cuda.bindings.runtime`` / ``cuda.cudart`` into ``sys.modules`` for one test (monkeypatch).

"Building" serialises the ONNX bytes + optimization profile + precision + TensorRT version
into a blob; "executing" runs that ONNX with ONNX Runtime on bytes read from the fake
device allocations (`fake_cuda`). Contracts enforced like real TensorRT:

- TensorRT 8.x: a network created without the EXPLICIT_BATCH flag cannot parse ONNX;
- the parser reports errors through ``num_errors`` / ``get_error(i)`` and returns False;
- ``IOptimizationProfile.set_shape`` raises on min > opt > max; the build returns None
  (not an exception) when an input has no profile, when the profile's non-batch dims differ
  from the network's, or when a forced failure (``fail_build``) is configured;
- ``deserialize_cuda_engine`` returns None for foreign/corrupt bytes or an engine from
  another TensorRT version (the real "version tag" failure);
- ``set_input_shape`` returns False outside the profile or for a non-input name;
  ``set_tensor_address`` returns False for unknown names;
- ``execute_async_v3`` returns False when an input shape or any I/O address is unset or
  when a bound buffer is too small for the current shapes; its stream handle must be an int;
- ``get_tensor_shape`` of an output is -1 in the batch dimension until inputs are set.
FP16 engines round outputs through float16 to resemble reduced precision.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from dms_net_core.errors import first_line
from test.fakes.fake_cuda import FakeCudaRuntime

MAGIC = b"FAKETRT\x01"


class Counters:
    """Shared call counters, so tests can tell a cache hit (no build) from a rebuild."""

    def __init__(self) -> None:
        self.builds = 0
        self.parses = 0
        self.deserializations = 0
        self.executions = 0


class Dims(tuple):
    """TensorRT Dims: a tuple of ints."""


class DataType(enum.IntEnum):
    """TensorRT's values. UINT8 is a network I/O type only (TensorRT >= 8.6), converted to
    float32/float16 before any other layer; the parser rejects it on older versions."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


def nptype(dtype: DataType):
    return {
        DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
        DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
    }[DataType(dtype)]


#: ONNX TensorProto element type -> TensorRT DataType, for network inputs
_ONNX_TO_TRT = {1: DataType.FLOAT, 2: DataType.UINT8, 6: DataType.INT32, 9: DataType.BOOL, 10: DataType.HALF}


class Logger:
    VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = 4, 3, 2, 1, 0

    def __init__(self, min_severity: int = 2) -> None:
        self.min_severity = min_severity
        self.messages: list[str] = []

    def log(self, severity: int, msg: str) -> None:
        self.messages.append(msg)


@dataclass
class _Tensor:
    name: str
    shape: tuple
    dtype: DataType = DataType.FLOAT


@dataclass
class INetworkDefinition:
    flags: int
    explicit_batch: bool
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class _ParserError:
    def __init__(self, text: str) -> None:
        self.text = text

    def desc(self) -> str:
        return self.text

    def __str__(self) -> str:
        return f"In node -1 (importModel): {self.text}"


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple, tuple, tuple]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - TensorRT names
        mn, op, mx = tuple(min), tuple(opt), tuple(max)
        if not (len(mn) == len(op) == len(mx)) or any(a > b for a, b in zip(mn, op)):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        if any(a > b for a, b in zip(op, mx)):
            raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        self.shapes[input] = (mn, op, mx)


class ITimingCache:
    def __init__(self, blob: bytes) -> None:
        self.entries = json.loads(blob.decode()) if blob else {"n": 0}

    def serialize(self) -> bytes:
        return json.dumps(self.entries).encode()


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = set()
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        if not isinstance(pool, MemoryPoolType) or size < 0:
            raise TypeError("set_memory_pool_limit(): incompatible function arguments")
        self.pool_limits[pool] = int(size)

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache


class IHostMemory(bytes):
    """Buffer-protocol result of ``build_serialized_network`` (bytes here)."""

    @property
    def nbytes(self) -> int:
        return len(self)


class FakeTensorRT:
    """One fake TensorRT installation (version, fp16 support, failure switches, counters)."""

    def __init__(self, version: str = "10.3.0", fast_fp16: bool = True, fail_build: bool = False) -> None:
        self.version = version
        self.fast_fp16 = fast_fp16
        self.fail_build = fail_build
        self.counters = Counters()
        self.last_config: IBuilderConfig | None = None

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    def module(self) -> types.ModuleType:
        fake = self
        mod = types.ModuleType("tensorrt")
        mod.__version__ = self.version
        mod.fake_state = self
        for obj in (Logger, Dims, DataType, TensorIOMode, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType,
                    nptype):
            setattr(mod, obj.__name__, obj)

        class Builder:
            def __init__(self, logger: Logger) -> None:
                if not isinstance(logger, Logger):
                    raise TypeError("Builder(): incompatible constructor arguments")
                self.logger = logger

            @property
            def platform_has_fast_fp16(self) -> bool:
                return fake.fast_fp16

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                explicit = bool(flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)))
                return INetworkDefinition(flags=flags, explicit_batch=explicit or fake.major >= 10)

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
                fake.counters.builds += 1
                fake.last_config = config
                if fake.fail_build or not network.onnx or len(config.profiles) != 1:
                    self.logger.log(Logger.ERROR, "build failed")
                    return None
                profile = config.profiles[0]
                for t in network.inputs:
                    if t.name not in profile.shapes:
                        self.logger.log(Logger.ERROR, f"{t.name}: no optimization profile")
                        return None
                    for shp in profile.shapes[t.name]:
                        if len(shp) != len(t.shape) or any(d != -1 and d != s for d, s in zip(t.shape, shp)):
                            self.logger.log(Logger.ERROR, f"{t.name}: profile {shp} does not match network {t.shape}")
                            return None
                if config.timing_cache is not None:
                    config.timing_cache.entries["n"] = config.timing_cache.entries.get("n", 0) + 1
                precision = "fp16" if BuilderFlag.FP16 in config.flags else "fp32"
                header = {
                    "version": fake.version,
                    "precision": precision,
                    "profile": {k: [list(s) for s in v] for k, v in profile.shapes.items()},
                    "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.inputs],
                    "outputs": [[t.name, list(t.shape)] for t in network.outputs],
                }
                h = json.dumps(header).encode()
                return IHostMemory(MAGIC + len(h).to_bytes(4, "little") + h + network.onnx)

        class OnnxParser:
            def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
                self.network = network
                self.errors: list[_ParserError] = []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int) -> _ParserError:
                return self.errors[index]

            def parse(self, model: bytes, path: str | None = None) -> bool:
                import onnx

                fake.counters.parses += 1
                if not self.network.explicit_batch:
                    self.errors.append(
                        _ParserError("Network must have explicit batch dimension (EXPLICIT_BATCH) for ONNX"))
                    return False
                try:
                    proto = onnx.load_model_from_string(bytes(model))
                    onnx.checker.check_model(proto)
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(_ParserError(f"Failed to parse ONNX model: {first_line(exc)}"))
                    return False

                def dims(vi):
                    return tuple(d.dim_value if d.dim_value else -1 for d in vi.type.tensor_type.shape.dim)

                inits = {i.name for i in proto.graph.initializer}
                inputs = []
                for i in proto.graph.input:
                    if i.name in inits:
                        continue
                    elem = i.type.tensor_type.elem_type
                    dtype = _ONNX_TO_TRT.get(elem)
                    if dtype is None or (dtype == DataType.UINT8 and fake.version_tuple < (8, 6)):
                        self.errors.append(_ParserError(
                            f"Unsupported ONNX data type: {onnx.TensorProto.DataType.Name(elem)} ({elem})"))
                        return False
                    inputs.append(_Tensor(i.name, dims(i), dtype))
                self.network.inputs = inputs
                self.network.outputs = [_Tensor(o.name, dims(o)) for o in proto.graph.output]
                self.network.onnx = bytes(model)
                return True

        class ICudaEngine:
            def __init__(self, header: dict, onnx_bytes: bytes) -> None:
                self.header = header
                self.onnx_bytes = onnx_bytes
                self.io = [(n, tuple(s), TensorIOMode.INPUT) for n, s, _ in header["inputs"]] + [
                    (n, tuple(s), TensorIOMode.OUTPUT) for n, s in header["outputs"]
                ]
                self.input_dtypes = {n: DataType(d) for n, _, d in header["inputs"]}
                self.profile = {k: tuple(tuple(s) for s in v) for k, v in header["profile"].items()}
                self._session = None

            @property
            def num_io_tensors(self) -> int:
                return len(self.io)

            def get_tensor_name(self, index: int) -> str:
                return self.io[index][0]

            def _find(self, name: str):
                for entry in self.io:
                    if entry[0] == name:
                        return entry
                return None

            def get_tensor_mode(self, name: str) -> TensorIOMode:
                entry = self._find(name)
                return entry[2] if entry else TensorIOMode.NONE

            def get_tensor_dtype(self, name: str) -> DataType:
                if self._find(name) is None:
                    raise RuntimeError(f"unknown tensor {name}")
                return self.input_dtypes.get(name, DataType.FLOAT)

            def get_tensor_shape(self, name: str) -> Dims:
                entry = self._find(name)
                return Dims(entry[1]) if entry else Dims(())

            def get_tensor_profile_shape(self, name: str, profile_index: int):
                return [Dims(s) for s in self.profile[name]]

            def session(self):
                if self._session is None:
                    import onnxruntime as ort

                    self._session = ort.InferenceSession(self.onnx_bytes, providers=["CPUExecutionProvider"])
                return self._session

            def create_execution_context(self):
                return IExecutionContext(self)

        class IExecutionContext:
            def __init__(self, engine: ICudaEngine) -> None:
                self.engine = engine
                self.shapes: dict[str, tuple] = {}
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape) -> bool:
                entry = self.engine._find(name)
                shape = tuple(int(d) for d in shape)
                if entry is None or entry[2] != TensorIOMode.INPUT:
                    return False
                mn, _, mx = self.engine.profile[name]
                if len(shape) != len(mn) or any(not (a <= s <= b) for a, s, b in zip(mn, shape, mx)):
                    return False  # real TRT logs "... is out of the optimization profile" and returns False
                self.shapes[name] = shape
                return True

            def _batch(self) -> int | None:
                batches = {s[0] for s in self.shapes.values()}
                inputs = [n for n, _, m in self.engine.io if m == TensorIOMode.INPUT]
                return batches.pop() if len(batches) == 1 and all(n in self.shapes for n in inputs) else None

            def get_tensor_shape(self, name: str) -> Dims:
                entry = self.engine._find(name)
                if entry is None:
                    return Dims(())
                if entry[2] == TensorIOMode.INPUT:
                    return Dims(self.shapes.get(name, entry[1]))
                batch = self._batch()
                return Dims((batch if batch is not None else -1, *entry[1][1:]))

            def set_tensor_address(self, name: str, memory: int) -> bool:
                if self.engine._find(name) is None or not isinstance(memory, int):
                    return False
                self.addresses[name] = memory
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                if not isinstance(stream_handle, int) or isinstance(stream_handle, bool):
                    raise TypeError("execute_async_v3(): incompatible function arguments (stream_handle: int)")
                fake.counters.executions += 1
                cuda = sys.modules["cuda.bindings.runtime"].fake_state
                batch = self._batch()
                if batch is None or any(n not in self.addresses for n, _, _ in self.engine.io):
                    return False  # "Address is not set" / "input shape not specified"
                feeds = {}
                for name, _, mode in self.engine.io:
                    if mode == TensorIOMode.INPUT:
                        shape = self.shapes[name]
                        dtype = np.dtype(nptype(self.engine.input_dtypes[name]))
                        nbytes = int(np.prod(shape)) * dtype.itemsize
                        if cuda.find(self.addresses[name], nbytes) is None:
                            return False
                        feeds[name] = np.frombuffer(cuda.read_device(self.addresses[name], nbytes),
                                                    dtype).reshape(shape)
                outs = self.engine.session().run(None, feeds)
                names = [o.name for o in self.engine.session().get_outputs()]
                for name, value in zip(names, outs):
                    value = np.ascontiguousarray(value, dtype=np.float32)
                    if self.engine.header["precision"] == "fp16":
                        value = value.astype(np.float16).astype(np.float32)
                    if cuda.find(self.addresses[name], value.nbytes) is None:
                        return False
                    cuda.write_device(self.addresses[name], value.tobytes())
                return True

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:
                fake.counters.deserializations += 1
                data = bytes(serialized_engine)
                if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
                    self.logger.log(Logger.ERROR, "Serialization assertion failed: magic tag mismatch")
                    return None
                n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
                try:
                    header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + n])
                except ValueError:
                    return None
                if header.get("version") != fake.version:
                    self.logger.log(Logger.ERROR,
                                    "The engine plan file is not compatible with this version of TensorRT")
                    return None
                onnx_bytes = data[len(MAGIC) + 4 + n :]
                try:
                    import onnx

                    onnx.load_model_from_string(onnx_bytes)
                except Exception:  # noqa: BLE001
                    return None
                return ICudaEngine(header, onnx_bytes)

        mod.Builder = Builder
        mod.OnnxParser = OnnxParser
        mod.Runtime = Runtime
        mod.ICudaEngine = ICudaEngine
        mod.IExecutionContext = IExecutionContext
        return mod


@dataclass
class FakeGpuStack:
    trt: FakeTensorRT
    cuda: FakeCudaRuntime


def install(monkeypatch, *, version: str = "10.3.0", gpu_name: str = "Orin (nvgpu)", compute_capability=(8, 7),
            fast_fp16: bool = True, legacy_cuda_layout: bool = False) -> FakeGpuStack:
    """Inject fake ``tensorrt`` and cuda-python modules into sys.modules for one test.

    ``legacy_cuda_layout`` exposes only ``from cuda import cudart`` (cuda-python < 12.6).
    """
    trt_fake = FakeTensorRT(version=version, fast_fp16=fast_fp16)
    cuda_fake = FakeCudaRuntime(gpu_name=gpu_name, compute_capability=tuple(compute_capability))
    cudart = cuda_fake.module()
    cuda_pkg = types.ModuleType("cuda")
    cuda_pkg.__path__ = []  # a package
    monkeypatch.setitem(sys.modules, "tensorrt", trt_fake.module())
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)  # the double reads its state here
    if legacy_cuda_layout:
        cuda_pkg.cudart = cudart
        monkeypatch.setitem(sys.modules, "cuda.cudart", cudart)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    else:
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = cudart
        cuda_pkg.bindings = bindings
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    return FakeGpuStack(trt_fake, cuda_fake)


__all__ = ["FakeGpuStack", "FakeTensorRT", "install"]
