"""TensorRT engine cache with a fingerprint sidecar: rebuild on mismatch, never fail to deserialize.

A serialized TensorRT engine is only valid for the exact TensorRT version and GPU (compute
capability) that built it, and for the ONNX graph, input form, precision and batch range it
was built from. Loading a stale engine is the most common failure of TensorRT ROS nodes ("Serialization
assertion failed", "version tag does not match"). So each engine file carries a JSON sidecar
with that fingerprint; we load an engine only when every field matches and otherwise rebuild,
logging which field differed.

File names: ``<precision>_b<min>-<max>_<fingerprint12>.engine`` + ``.json`` in the bundle's
``engines/`` (or any writable directory). No TensorRT import here: pure logic, unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

LOGGER = logging.getLogger("dms_net_core.runtime")


@dataclass(frozen=True)
class EngineFingerprint:
    """Everything a serialized engine depends on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    onnx_sha256: str
    precision: str  # "fp32" | "fp16"
    min_batch: int
    opt_batch: int
    max_batch: int
    #: "uint8": the engine takes prepared uint8 eyes [B,S,S,3] and normalises on the GPU;
    #: "float32": the ONNX graph's normalised [B,3,S,S]. Engines before this field count as a mismatch.
    input_form: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def stem(self) -> str:
        return f"{self.precision}_b{self.min_batch}-{self.max_batch}_{self.digest[:12]}"

    def differences(self, other: dict) -> list[str]:
        """``field (cached X, now Y)`` for each field that differs from a sidecar's dict."""
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), other.get(f.name)
            if mine != theirs:
                out.append(f"{f.name} (cached {theirs!r}, now {mine!r})")
        return out


@dataclass
class CachedEngine:
    path: Path
    data: bytes
    built: bool  # True when built now, False when loaded from the cache


class EngineCache:
    """One directory of engines + sidecars; `get_or_build` is the only entry point."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def paths(self, fp: EngineFingerprint) -> tuple[Path, Path]:
        return self.directory / f"{fp.stem}.engine", self.directory / f"{fp.stem}.json"

    def _read_sidecar(self, path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def lookup(self, fp: EngineFingerprint) -> tuple[bytes | None, str]:
        """Return ``(engine bytes, "")`` on a hit, else ``(None, why it is a miss)``."""
        engine_path, sidecar_path = self.paths(fp)
        if engine_path.is_file() and sidecar_path.is_file():
            sidecar = self._read_sidecar(sidecar_path)
            if sidecar is None:
                return None, f"sidecar {sidecar_path.name} is unreadable"
            diffs = fp.differences(sidecar)
            if diffs:
                return None, f"{engine_path.name}: " + ", ".join(diffs) + " differ"
            return engine_path.read_bytes(), ""
        # no exact match: explain with the closest stale engine for the same batch range
        best: tuple[int, str] | None = None
        for side in sorted(self.directory.glob(f"*_b{fp.min_batch}-{fp.max_batch}_*.json")):
            sidecar = self._read_sidecar(side)
            if sidecar is None:
                continue
            diffs = fp.differences(sidecar)
            if diffs and (best is None or len(diffs) < best[0]):
                best = (len(diffs), f"{side.with_suffix('.engine').name}: " + ", ".join(diffs) + " differ")
        if best is not None:
            return None, best[1]
        return None, f"no cached engine {engine_path.name}"

    def store(self, fp: EngineFingerprint, data: bytes) -> Path:
        """Write engine then sidecar (atomically each), so a crash never leaves a matching
        sidecar next to a truncated engine."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine_path, sidecar_path = self.paths(fp)
        for path, payload in ((engine_path, bytes(data)),
                              (sidecar_path, (json.dumps(fp.to_dict(), indent=2) + "\n").encode())):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, path)
        return engine_path

    def get_or_build(
        self,
        fp: EngineFingerprint,
        build: Callable[[], bytes],
        validate: Callable[[bytes], bool] | None = None,
        rebuild: bool = False,
    ) -> CachedEngine:
        """Load the matching engine or build (and store) a new one.

        ``validate`` (deserialization in practice) turns a corrupt cached file into a rebuild
        instead of an error. Build errors propagate so the caller can fall back.
        """
        engine_path, _ = self.paths(fp)
        if rebuild:
            reason = "rebuild requested"
        else:
            data, reason = self.lookup(fp)
            if data is not None:
                if validate is None or validate(data):
                    LOGGER.info("tensorrt engine cache hit: %s", engine_path)
                    return CachedEngine(engine_path, data, built=False)
                reason = f"{engine_path.name} failed to deserialize (corrupt or truncated)"
        LOGGER.warning("tensorrt engine cache: building a new engine (%s); this takes minutes on a Jetson", reason)
        data = bytes(build())
        try:
            path = self.store(fp, data)
        except OSError as exc:
            LOGGER.warning("tensorrt engine cache: cannot write %s (%s); the engine will be rebuilt next start",
                           engine_path, exc)
            path = engine_path
        return CachedEngine(path, data, built=True)
