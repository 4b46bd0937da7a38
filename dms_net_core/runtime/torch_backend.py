"""PyTorch backend: eager DMS-Net from ``weights.safetensors`` (the reference and GPU fallback).

It rebuilds the network with `dms_net_core.model.build_model(bundle.model_config)` and
loads the bundle's safetensors weights (never a pickle). On CUDA it runs channels_last,
optionally fp16, and optionally

- ``cuda_graph=True``: one CUDA graph captured per batch size on static input buffers;
  replay removes the Python/kernel-launch overhead that dominates batch-1 latency, or
- ``compile=True``: ``torch.compile`` (Inductor) of the model, or
- both: Inductor's fused kernels captured in the backend's own CUDA graph (a replay is one
  launch with no Python guards or cudagraph-tree bookkeeping per call; compile_mode must then
  be one that records no CUDA graphs itself).

All are GPU-only and off by default: capture/compilation costs seconds at start-up.
``compile_mode="reduce-overhead"`` gives torch.compile's own CUDA graphs (fused kernels *and*
no launch overhead), the candidate for the batch-1 latency target. ``compile_options`` passes
Inductor options instead of a mode (torch.compile takes one or the other), e.g.
``{"freezing": True, "triton.cudagraphs": True}``: weights become constants Inductor can
pre-layout and fold, plus reduce-overhead's CUDA graphs.

What runs is `torch_serving.ServingModel`: prepared uint8 eyes are normalised on the device
inside the graph (a quarter of the host->device bytes of float32), and the outputs come back
in one packed copy. Normalised float32 input is accepted too. ``attention_outputs=False``
leaves the OSIM attention maps (and the class activation maps of a bundle that has them) out of
that copy (the result's ``attention_left/right`` and ``cam_left/right`` are then None): for a
caller that does not draw overlays.

Before any of that, inference-mode BatchNorms are folded into their convolutions
(``fold_batchnorm=True``, see `batchnorm_folding`): 155 fewer kernels and activation passes
for ResNet-152, the same arithmetic as ONNX Runtime's and TensorRT's own BN folding.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from dms_net_core.bundle import ModelBundle
from dms_net_core.postprocess import eye_probabilities, sigmoid
from dms_net_core.runtime.base import InferenceBackend, InferenceResult
from dms_net_core.runtime.inputs import check_pair, input_shape, warmup_pair

LOGGER = logging.getLogger("dms_net_core.runtime")


def _default_factory(cfg: Any) -> Any:
    from dms_net_core.model import build_model

    return build_model(cfg)


#: torch.compile modes the backend passes through (None = torch's default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: modes whose compiled code records CUDA graphs itself (cudagraph trees), so the backend's own
#: capture cannot wrap them
SELF_GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def check_torch_options(
    device_type: str,
    precision: str,
    cuda_graph: bool,
    compile: bool,  # noqa: A002 - mirrors torch.compile
    compile_mode: str | None,
    compile_options: dict[str, Any] | None,
) -> None:
    """Reject option combinations that would fail later or silently do nothing (one-line ValueError)."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: choose fp32 or fp16")
    if precision == "fp16" and device_type != "cuda":
        raise ValueError("fp16 needs a CUDA device for the torch backend: use precision='fp32' on CPU")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile_mode {compile_mode!r}: choose one of {', '.join(map(str, COMPILE_MODES))}")
    if compile_mode is not None and not compile:
        raise ValueError(f"compile_mode={compile_mode!r} without compile=True does nothing: "
                         "set compile=True or drop it")
    if compile_options is not None and not compile:
        raise ValueError("compile_options without compile=True do nothing: set compile=True or drop them")
    if compile_options is not None and compile_mode is not None:
        raise ValueError("torch.compile takes a mode or Inductor options, not both: "
                         "drop compile_mode (options such as triton.cudagraphs cover it)")
    if cuda_graph and compile:
        source = (
            f"compile_mode={compile_mode!r}" if compile_mode in SELF_GRAPHING_COMPILE_MODES
            else "compile_options' triton.cudagraphs=True" if (compile_options or {}).get("triton.cudagraphs")
            else None
        )
        if source:
            raise ValueError(
                f"{source} already captures its own CUDA graphs: drop cuda_graph=True, or compile without "
                "them (compile_mode='default') to capture the compiled kernels in the backend's graph"
            )
    if (cuda_graph or compile) and device_type != "cuda":
        raise ValueError("cuda_graph/compile are GPU options: drop them on CPU")


class TorchBackend(InferenceBackend):
    """`InferenceBackend` over eager (or graph-captured / compiled) PyTorch."""

    name = "torch"

    def __init__(
        self,
        bundle: ModelBundle,
        device: str = "auto",
        precision: str = "fp32",
        cuda_graph: bool = False,
        compile: bool = False,  # noqa: A002 - mirrors torch.compile
        compile_mode: str | None = None,
        compile_options: dict[str, Any] | None = None,
        fold_batchnorm: bool = True,
        cudnn_benchmark: bool = True,
        attention_outputs: bool = True,
        model_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        import torch
        from safetensors.torch import load_file

        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}: choose auto, cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device: use device='cpu' or install a CUDA build of torch")
        dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        check_torch_options(dev.type, precision, cuda_graph, compile, compile_mode, compile_options)

        if dev.type == "cuda":
            # The input shape is fixed (the bundle's size, a few batch sizes), the case cuDNN's
            # autotuner is for: each convolution shape is timed once during warm-up / graph capture
            # and the fastest kernel kept, instead of cuDNN's heuristic pick. The flag is
            # process-wide: the last backend constructed sets it (False turns it off).
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
            # precision="fp32" means IEEE fp32 convolutions; torch's default runs them in TF32
            # (10-bit mantissa), which misses the 1e-4 agreement with ONNX Runtime. Process-wide too.
            torch.backends.cudnn.allow_tf32 = precision != "fp32"
        self.cudnn_benchmark = dev.type == "cuda" and bool(cudnn_benchmark)
        self.bundle = bundle
        self.image_size = bundle.image_size
        self.device = dev
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.cuda_graph = cuda_graph
        self.compiled = compile
        model = (model_factory or _default_factory)(bundle.model_config)
        if not bundle.weights_path.is_file():
            raise RuntimeError(
                f"{bundle.path} is a deployment-only bundle without {bundle.weights_path.name}: "
                "use the onnxruntime or tensorrt backend, or re-export with PyTorch weights"
            )
        state = load_file(str(bundle.weights_path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"{bundle.weights_path} does not fit the model built from model.json "
                f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}): "
                "re-export the bundle with this code version"
            )
        model = model.eval().to(dev)
        self.folded_batchnorms = 0
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(2, 1, 3, self.image_size, self.image_size, generator=generator).to(dev)
        if fold_batchnorm:
            from dms_net_core.runtime.batchnorm_folding import fold_batchnorm as fold

            self.folded_batchnorms = fold(model, (example[0], example[1]))
        else:
            # One eager forward at the bundle's size, as folding does: modules cache size-dependent
            # constants on first sight (OSIM's pooling/upsampling operators), and they must exist
            # before a CUDA graph capture or torch.compile, which must not create them.
            with torch.inference_mode():
                model(example[0], example[1])
        model = model.to(dtype=self.dtype)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        from dms_net_core.runtime.torch_serving import ServingModel

        self.num_classes = int(bundle.model_config.num_classes)
        self.per_eye = bool(bundle.model_config.per_eye_heads)
        self.attention_outputs = bool(attention_outputs)
        self.cams = bool(bundle.has_cams) and self.attention_outputs  # the same outputs as the bundle's graph
        self.model = ServingModel(model, bundle.preprocess, self.dtype, dev, attention_outputs=self.attention_outputs,
                                  cams=self.cams).eval()
        if compile:
            kwargs = {"options": dict(compile_options)} if compile_options is not None else {"mode": compile_mode}
            # static shapes: the bundle fixes S, and a batch size gets its own graph anyway
            self._forward = torch.compile(self.model, dynamic=False, **kwargs)
        else:
            self._forward = self.model
        self._graphs: dict[tuple[int, bool], tuple[Any, Any, Any, Any]] = {}
        #: on CUDA, time upload / network / download with CUDA events into ``timings_ms``
        #: (a few microseconds per call, so off unless a benchmark asks)
        self.stage_timing = False

    # -- helpers -------------------------------------------------------------------------
    def _to_device(self, arr: np.ndarray) -> Any:
        """Host array -> device tensor: uint8 as it is (normalised in the graph), float32 cast
        to the model's dtype and layout."""
        import torch

        t = torch.from_numpy(arr)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        if t.dtype == torch.uint8:
            return t
        t = t.to(self.dtype)
        if self.device.type == "cuda":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _graph_for(self, batch: int, prepared_uint8: bool) -> tuple[Any, Any, Any, Any]:
        """Capture (once per batch size and input form) a CUDA graph reading from static input buffers."""
        import torch

        key = (batch, prepared_uint8)
        if key in self._graphs:
            return self._graphs[key]
        shape = (batch, *input_shape("uint8" if prepared_uint8 else "float32", self.image_size))
        if prepared_uint8:
            static_l = torch.zeros(shape, device=self.device, dtype=torch.uint8)
        else:
            static_l = torch.zeros(shape, device=self.device,
                                   dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        static_r = torch.zeros_like(static_l)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            # warm-up on a side stream, as torch.cuda.graphs docs require; with compile=True this
            # also compiles (and autotunes) for these buffers, so the capture replays Inductor's
            # kernels and no guard can trigger a recompilation inside it
            for _ in range(3):
                self._forward(static_l, static_r)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._forward(static_l, static_r)
        self._graphs[key] = (graph, static_l, static_r, static_out)
        LOGGER.info("torch backend: captured a CUDA graph for batch %d (%s input)", batch,
                    "uint8" if prepared_uint8 else "float")
        return self._graphs[key]

    # -- InferenceBackend ----------------------------------------------------------------
    def infer(self, left: np.ndarray, right: np.ndarray) -> InferenceResult:
        import torch

        from dms_net_core.runtime.torch_serving import unpack_outputs

        left, right = check_pair(left, right, self.image_size)
        events = ([torch.cuda.Event(enable_timing=True) for _ in range(4)]
                  if self.stage_timing and self.device.type == "cuda" else None)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if events:
                events[0].record()
            if self.cuda_graph:
                graph, static_l, static_r, packed_t = self._graph_for(left.shape[0], left.dtype == np.uint8)
                # straight from pinned host memory into the graph's input buffers
                static_l.copy_(torch.from_numpy(left).pin_memory(), non_blocking=True)
                static_r.copy_(torch.from_numpy(right).pin_memory(), non_blocking=True)
                if events:
                    events[1].record()
                graph.replay()
            else:
                left_t, right_t = self._to_device(left), self._to_device(right)
                if events:
                    events[1].record()
                packed_t = self._forward(left_t, right_t)
            if events:
                events[2].record()
            if self.device.type == "cuda":
                # the one device->host copy, into pinned memory (a DMA, no staging), then one sync
                host = torch.empty(packed_t.shape, dtype=packed_t.dtype, pin_memory=True)
                host.copy_(packed_t, non_blocking=True)
                if events:
                    events[3].record()
                torch.cuda.current_stream().synchronize()
                packed = host.numpy()
            else:
                packed = packed_t.numpy()
        t1 = time.perf_counter()
        out = unpack_outputs(packed, self.num_classes, per_eye=self.per_eye, attention=self.attention_outputs,
                             cams=self.cams)
        logits = out["logits"]
        timings = {"inference": (t1 - t0) * 1e3}
        if events:
            # GPU-timeline split of one call: where a batch-1 millisecond goes (dms-net-bench prints it)
            timings.update(
                upload=events[0].elapsed_time(events[1]), network=events[1].elapsed_time(events[2]),
                download=events[2].elapsed_time(events[3]),
            )
        return InferenceResult(
            probabilities=sigmoid(logits),
            logits=logits,
            attention_left=out["attention_left"],
            attention_right=out["attention_right"],
            timings_ms=timings,
            **eye_probabilities(out),
            cam_left=out.get("cam_left"),
            cam_right=out.get("cam_right"),
        )

    def warmup(self, iterations: int = 2, dtype: str = "uint8") -> None:
        pair = warmup_pair(1, self.image_size, dtype)
        for _ in range(max(iterations, 3 if self.compiled else iterations)):
            self.infer(*pair)

    def describe(self) -> str:
        mode = ("compile+cuda_graph" if self.cuda_graph and self.compiled else "cuda_graph" if self.cuda_graph
                else "compile" if self.compiled else "eager")
        extras = f" bn-folded={self.folded_batchnorms}" if self.folded_batchnorms else ""
        extras += " cudnn-benchmark" if self.cudnn_benchmark else ""
        extras += "" if self.attention_outputs else " no-attention-outputs"
        return f"torch {self.device.type} {self.precision} {mode}{extras} model={self.bundle.model_id}"

    def close(self) -> None:
        self._graphs.clear()
        self.model = None
        self._forward = None
        if self.compiled:
            import torch

            # Dynamo's compiled entries, shape history and cudagraph-tree pools hang on the
            # (shared) ServingModel.forward code, not on this backend: without a reset, a later
            # compiled backend in the same process inherits them (and its recompile limit).
            torch._dynamo.reset()
