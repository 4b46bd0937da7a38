"""Command-line arguments `evaluate` and `replay` share, and what they build.

The pipeline arguments default to the node's parameter defaults (`PipelineSettings`, built
from the pairing, decoding and exam-pipeline settings dataclasses), so "offline" means "what
the node would have done" unless the user says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dms_net_core.errors import one_line
from dms_net_core.exam_pipeline import ExamSettings
from dms_net_ros.bag import io
from dms_net_ros.image_codec import DecodeSettings
from dms_net_ros.node_parameters import PipelineSettings
from dms_net_ros.pairing import PairingSettings


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))


def add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--left-topic", default="left/image_raw",
                        help="left eye topic in the bag (raw or <topic>/compressed found automatically)")
    parser.add_argument("--right-topic", default="right/image_raw")
    parser.add_argument("--exam-topic", default="exam_id", help="std_msgs/String exam id topic ('' for none)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="labels sidecar (default: <bag>/labels.csv or <bag>.labels.csv)")
    parser.add_argument("--no-labels", action="store_true", help="no ground truth: probabilities and counts only")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    pairing, decode, exam = PairingSettings(), DecodeSettings(), ExamSettings()
    parser.add_argument("--slop", type=float, default=pairing.slop_s,
                        help=f"pairing slop, seconds (node default {pairing.slop_s})")
    parser.add_argument("--queue-size", type=int, default=pairing.pairing_queue_size,
                        help="pairing queue per eye (node default)")
    parser.add_argument("--pair-timeout", type=float, default=pairing.pair_timeout_s,
                        help="seconds an eye waits for its partner")
    parser.add_argument("--no-quality-gate", action="store_true", help="the node's quality_gate parameter set to false")
    parser.add_argument("--quality-min-score", type=float, default=exam.quality_min_score,
                        help="the node's quality_min_score parameter")
    parser.add_argument("--max-pixels", type=int, default=decode.max_pixels,
                        help=f"the node's max_pixels parameter (default {decode.max_pixels})")


def settings_from_args(args: argparse.Namespace) -> PipelineSettings:
    return PipelineSettings(
        pairing=PairingSettings(slop_s=args.slop, pair_timeout_s=args.pair_timeout, pairing_queue_size=args.queue_size),
        decode=DecodeSettings(max_pixels=args.max_pixels),
        exam=ExamSettings(quality_gate=not args.no_quality_gate, quality_min_score=args.quality_min_score))


def load_bundle_and_backend(args: argparse.Namespace) -> tuple[Any, Any]:
    from dms_net_core.bundle import BundleError, ModelBundle
    from dms_net_core.runtime import create_backend

    try:
        bundle = ModelBundle.load(args.bundle)
        backend = create_backend(bundle, backend=args.backend, device=args.device, precision=args.precision)
    except (BundleError, ValueError, RuntimeError, ImportError) as err:
        raise io.BagError(one_line(err)) from err
    return bundle, backend
