"""TensorRT backend: the bundle's ONNX built into an engine on the target, cached with a fingerprint.

Flow (TensorRT 8.6+ and 10.x Python API, named-tensor interface):

1. Fingerprint = TensorRT version, GPU name, compute capability, ONNX sha256, precision,
   batch range, input form. ``input_form="uint8"`` (the default, the node's form) builds the
   engine from the bundle's graph with the prepared-uint8 input in front
   (`prepared_input_onnx`), so normalisation and the NHWC->NCHW change run on the GPU and a pair
   crosses to it at a quarter of float32's bytes; ``"float32"`` builds the graph as exported
   (prepared uint8 is then normalised on the host; also what TensorRT < 8.6 gets, with a log
   line). `EngineCache` loads ``engines/<precision>_b<min>-<max>_<fp12>.engine`` when its
   sidecar matches, otherwise builds (`tensorrt_build.build_serialized_engine`) and logs which
   field differed. A file that fails ``deserialize_cuda_engine`` is rebuilt, not fatal.
   A build failure raises, so ``create_backend("auto")`` falls back to ONNX Runtime.
2. ``trt.Runtime.deserialize_cuda_engine`` -> ``create_execution_context``; I/O tensors are
   found by name (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
   ``get_tensor_dtype``) and must be exactly left/right -> logits/attention_left/attention_right
   (+ the per-eye logits and class activation maps the bundle lists, `ModelBundle.output_names`).
3. Device buffers for the max batch are allocated once (cudaMalloc) and bound once
   (``set_tensor_address``); each call does ``set_input_shape`` per input, H2D copies,
   ``execute_async_v3`` on the backend's own stream, D2H copies of the batch's
   ``get_tensor_shape`` and one stream synchronise.

VERIFIED HOW: on this project's build machine there is no GPU and TensorRT cannot be
installed, so this module has run only against the test double in ``test/fakes/``
(which enforces the API contracts the code relies on). No line here has run against real
TensorRT. On a Jetson, run ``dms-net-build-engine BUNDLE --verify`` (runtime/README.md).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.bundle import CAM_OUTPUT_NAMES, INPUT_NAMES, OUTPUT_NAMES, ModelBundle
from dms_net_core.postprocess import eye_probabilities, sigmoid
from dms_net_core.runtime.base import InferenceBackend, InferenceResult
from dms_net_core.runtime.cuda_api import load_cuda_api
from dms_net_core.runtime.engine_cache import EngineCache, EngineFingerprint
from dms_net_core.runtime.inputs import INPUT_FORMS, check_pair, float_pair, input_shape, warmup_pair
from dms_net_core.runtime.tensorrt_build import (
    EngineBuildError,
    build_serialized_engine,
    make_trt_logger,
    timing_cache_path,
    trt_version_tuple,
)

LOGGER = logging.getLogger("dms_net_core.runtime")



def _writable_engine_dir(bundle: ModelBundle, engine_dir: str | os.PathLike | None) -> Path:
    """The bundle's engines/ unless it is read-only (e.g. installed under /opt); then a user cache."""
    if engine_dir is not None:
        return Path(engine_dir)
    preferred = bundle.engines_dir
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    fallback = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dms_net" / "engines"
                / bundle.model_id.replace("@", "_"))
    LOGGER.warning("bundle engines dir %s is not writable; caching TensorRT engines in %s", preferred, fallback)
    return fallback


class TensorRTBackend(InferenceBackend):
    """`InferenceBackend` over a TensorRT engine built from the bundle's ONNX."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: ModelBundle,
        device: str = "auto",
        precision: str = "fp32",
        min_batch: int = 1,
        opt_batch: int = 1,
        max_batch: int = 8,
        workspace_mib: int = 1024,
        engine_dir: str | os.PathLike | None = None,
        rebuild: bool = False,
        input_form: str = "uint8",
    ) -> None:
        if input_form not in INPUT_FORMS:
            raise ValueError(f"unknown input_form {input_form!r}: "
                             "choose uint8 (prepared eyes, normalised on the GPU) or float32")
        if device == "cpu":
            raise ValueError("tensorrt runs on a CUDA GPU only: "
                             "use device='auto' or 'cuda', or the onnxruntime backend on CPU")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"unknown precision {precision!r}: choose fp32 or fp16")
        import tensorrt as trt

        if input_form == "uint8" and trt_version_tuple(trt) < (8, 6):
            LOGGER.warning(
                "tensorrt %s has no uint8 network inputs (8.6+): building a float32-input engine; "
                "prepared eyes are normalised on the host", trt.__version__,
            )
            input_form = "float32"
        self.trt = trt
        self.cuda = load_cuda_api()
        self.bundle = bundle
        self.image_size = bundle.image_size
        self.precision = precision
        self.input_form = input_form
        self.input_forms = ("uint8",) if input_form == "uint8" else INPUT_FORMS
        self.min_batch, self.max_batch = int(min_batch), int(max_batch)
        self._logger = make_trt_logger(trt)
        self._buffers: dict[str, int] = {}
        self._stream: Any = None
        self.context = None
        self.engine = None

        info = self.cuda.device_info()
        self.gpu_name = info.name
        self.fingerprint = EngineFingerprint(
            tensorrt_version=str(trt.__version__),
            gpu_name=info.name,
            compute_capability=info.compute_capability,
            onnx_sha256=bundle.onnx_sha256,
            precision=precision,
            min_batch=int(min_batch),
            opt_batch=int(opt_batch),
            max_batch=int(max_batch),
            input_form=input_form,
        )
        cache_dir = _writable_engine_dir(bundle, engine_dir)
        cache = EngineCache(cache_dir)
        runtime = trt.Runtime(self._logger)
        deserialized: dict[str, Any] = {}

        def build() -> bytes:
            return build_serialized_engine(
                trt,
                bundle.onnx_path,
                image_size=self.image_size,
                precision=precision,
                min_batch=int(min_batch),
                opt_batch=int(opt_batch),
                max_batch=int(max_batch),
                workspace_mib=workspace_mib,
                timing_cache=timing_cache_path(cache_dir, self.fingerprint.tensorrt_version, info.name,
                                               info.compute_capability),
                logger=self._logger,
                input_form=input_form,
                preprocess=bundle.preprocess,
            )

        def validate(data: bytes) -> bool:
            try:
                engine = runtime.deserialize_cuda_engine(data)
            except Exception:  # noqa: BLE001 - some TensorRT versions raise instead of returning None
                engine = None
            deserialized["engine"] = engine
            return engine is not None

        cached = cache.get_or_build(self.fingerprint, build, validate=validate, rebuild=rebuild)
        self.engine_path = cached.path
        self.engine_built = cached.built
        engine = deserialized.get("engine") if not cached.built else None
        if engine is None:
            engine = runtime.deserialize_cuda_engine(cached.data)
        if engine is None:
            raise EngineBuildError(f"TensorRT could not deserialize the engine it just built ({cached.path}): "
                                   "check the TensorRT log")
        self.runtime = runtime
        self.engine = engine
        self._bind_io()

    # -- setup ---------------------------------------------------------------------------
    def _bind_io(self) -> None:
        trt, engine = self.trt, self.engine
        modes: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            modes[name] = engine.get_tensor_mode(name)
            self.dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        inputs = sorted(n for n, m in modes.items() if m == trt.TensorIOMode.INPUT)
        outputs = sorted(n for n, m in modes.items() if m == trt.TensorIOMode.OUTPUT)
        if inputs != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
            raise EngineBuildError(f"engine tensors {inputs} -> {outputs} are not left/right -> {list(OUTPUT_NAMES)}: "
                                   "re-export the bundle")
        # per-eye logits when the bundle's model has them (and the engine was built from that graph)
        self.outputs = [n for n in self.bundle.output_names if n in outputs]
        if self.outputs != list(self.bundle.output_names):
            raise EngineBuildError(f"engine outputs {outputs} lack "
                                   f"{sorted(set(self.bundle.output_names) - set(outputs))} of this bundle: "
                                   "rebuild it (--rebuild)")
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineBuildError("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = self.cuda.stream_create()
        # size every buffer for the largest batch, bind once: addresses never change
        shape = (self.max_batch, *input_shape(self.input_form, self.image_size))
        for name in INPUT_NAMES:
            if not self.context.set_input_shape(name, shape):
                raise EngineBuildError(f"engine rejects input shape {shape} for {name!r}: rebuild it (--rebuild)")
        for name in (*INPUT_NAMES, *self.outputs):
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineBuildError(f"engine output {name!r} has unresolved shape {shape}: re-export the bundle")
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self._buffers[name] = self.cuda.malloc(nbytes)
            if not self.context.set_tensor_address(name, self._buffers[name]):
                raise EngineBuildError(f"TensorRT refused the device address for {name!r}")

    # -- InferenceBackend ----------------------------------------------------------------
    def infer(self, left: np.ndarray, right: np.ndarray) -> InferenceResult:
        left, right = check_pair(left, right, self.image_size, max_batch=self.max_batch)
        if left.shape[0] < self.min_batch:
            raise ValueError(f"batch {left.shape[0]} is below the engine's min batch {self.min_batch}: "
                             "rebuild with --min-batch 1")
        if self.input_form == "uint8" and left.dtype != np.uint8:
            raise ValueError(
                "this engine takes prepared uint8 eyes [B,S,S,3] and normalises them on the GPU: "
                "pass prepare_eye_uint8 output, "
                "or load the backend with input_form='float32' for normalised float32 input"
            )
        t0 = time.perf_counter()
        if self.input_form == "float32":
            left, right = float_pair(left, right, self.bundle.preprocess)  # normalised on the host for a float engine
        staged = []  # host arrays must outlive their async copies (until the synchronise below)
        for name, arr in (("left", left), ("right", right)):
            arr = arr.astype(self.dtypes[name], copy=False)
            if not self.context.set_input_shape(name, arr.shape):
                raise ValueError(f"engine rejects {name} shape {arr.shape}: outside its optimization profile; "
                                 "rebuild with a matching --max-batch")
            self.cuda.memcpy_htod_async(self._buffers[name], arr.ctypes.data, arr.nbytes, self._stream)
            staged.append(arr)
        t1 = time.perf_counter()
        if not self.context.execute_async_v3(self.cuda.stream_handle(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log): "
                               "rebuild the engine with --rebuild")
        host: dict[str, np.ndarray] = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.dtypes[name])
            self.cuda.memcpy_dtoh_async(out.ctypes.data, self._buffers[name], out.nbytes, self._stream)
            host[name] = out
        self.cuda.stream_synchronize(self._stream)
        t2 = time.perf_counter()
        del staged
        logits = host["logits"].astype(np.float32, copy=False)
        cams = {name: host[name].astype(np.float32, copy=False) if name in host else None for name in CAM_OUTPUT_NAMES}
        return InferenceResult(
            probabilities=sigmoid(logits),
            logits=logits,
            attention_left=host["attention_left"].astype(np.float32, copy=False),
            attention_right=host["attention_right"].astype(np.float32, copy=False),
            timings_ms={"inference": (t2 - t0) * 1e3, "h2d_enqueue": (t1 - t0) * 1e3},
            **eye_probabilities(host),
            **cams,
        )

    def warmup(self, iterations: int = 2, dtype: str = "uint8") -> None:
        pair = warmup_pair(self.min_batch, self.image_size, "uint8" if self.input_form == "uint8" else dtype)
        for _ in range(iterations):
            self.infer(*pair)

    def describe(self) -> str:
        return (
            f"tensorrt {self.fingerprint.tensorrt_version} {self.gpu_name} {self.precision} {self.input_form}-input "
            f"batch {self.min_batch}-{self.max_batch} engine={Path(self.engine_path).name} model={self.bundle.model_id}"
        )

    def close(self) -> None:
        for ptr in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self.cuda.stream_destroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None

    def __del__(self) -> None:  # best effort: device memory must not leak with the object
        try:
            if self._buffers:
                self.close()
        except Exception:  # noqa: BLE001
            pass
