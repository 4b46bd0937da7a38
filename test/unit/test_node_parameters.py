"""Every default the node's pipeline has exists once: in the settings dataclass of the step
that uses it (pairing, decoding, the exam pipeline). The node's parameter table is generated
from them, and config/diagnose.yaml, the pairer, the bag tools' options and a node started by
``replay`` all agree with them (no rclpy needed)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields, replace
from pathlib import Path

import yaml

from dms_net_core.exam_pipeline import ExamSettings
from dms_net_ros import package_files
from dms_net_ros.bag import arguments, evaluate
from dms_net_ros.image_codec import DEFAULT_MAX_PIXELS, DecodeSettings
from dms_net_ros.node_parameters import PARAMETERS, PipelineSettings
from dms_net_ros.package_files import IMPORT_ROOT, package_file, source_checkout
from dms_net_ros.pairing import ApproximateTimePairer, PairingSettings

REPO = Path(__file__).resolve().parents[2]
DECLARED = {p.name: p for p in PARAMETERS}


def test_the_pipeline_parameters_are_the_settings_fields_with_their_defaults():
    for settings_cls in (PairingSettings, DecodeSettings, ExamSettings):
        for f in fields(settings_cls):
            spec = DECLARED[f.name]
            assert spec.default == f.default and type(spec.default) is type(f.default), f.name
            assert spec.description == f.metadata["description"] and spec.description
    assert len(DECLARED) == len(PARAMETERS)  # no name declared twice
    assert DEFAULT_MAX_PIXELS == DecodeSettings().max_pixels == 4096 * 4096


def test_diagnose_yaml_holds_every_parameter_at_its_default():
    params = yaml.safe_load((REPO / "config" / "diagnose.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(DECLARED)
    for name, value in params.items():
        assert type(value) is type(DECLARED[name].default), name  # ROS rejects a type change
        assert value == DECLARED[name].default, (f"config/diagnose.yaml {name}: {value!r} "
                                                 f"but the default is {DECLARED[name].default!r}")


def test_the_pairers_own_defaults_are_the_settings():
    sig = inspect.signature(ApproximateTimePairer.__init__).parameters
    d = PairingSettings()
    assert (sig["slop_s"].default, sig["queue_size"].default, sig["timeout_s"].default, sig["max_ahead_s"].default) == (
        d.slop_s, d.pairing_queue_size, d.pair_timeout_s, d.max_stamp_ahead_s)
    pairer = ApproximateTimePairer.from_settings(replace(d, slop_s=0.25))
    assert pairer.slop_ns == 250_000_000 and pairer.queue_size == d.pairing_queue_size


def test_node_parameter_values_make_the_settings_and_back():
    defaults = {name: spec.default for name, spec in DECLARED.items()}
    assert PipelineSettings.from_parameters(defaults) == PipelineSettings()
    changed = PipelineSettings.from_parameters(defaults | {"slop_s": 1, "quality_gate": False, "max_pixels": 1000})
    assert changed.pairing.slop_s == 1.0 and isinstance(changed.pairing.slop_s, float)
    assert changed.exam.quality_gate is False and changed.decode.max_pixels == 1000
    # what `replay --start-node` passes: every pipeline parameter, spelled as ROS parses it
    args = dict(a.split(":=") for a in changed.node_params())
    assert set(args) == {f.name for c in (PairingSettings, DecodeSettings, ExamSettings) for f in fields(c)}
    assert args["quality_gate"] == "false" and args["slop_s"] == "1.0" and args["max_pixels"] == "1000"


def test_bag_tool_options_default_to_the_nodes_settings():
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["some.bag", "some_bundle"])
    assert arguments.settings_from_args(args) == PipelineSettings()


def test_shipped_files_are_found_from_a_checkout_or_an_install(tmp_path, monkeypatch):
    assert source_checkout() == REPO == IMPORT_ROOT  # the tests run from the checkout
    assert package_file("config/fastdds_large_images.xml") == REPO / "config" / "fastdds_large_images.xml"
    assert package_file("config/no_such_file.xml", share_dir=tmp_path) is None
    # installed: no package.xml above the package; the share directory has config/
    share = tmp_path / "share" / "dms_net_ros"
    (share / "config").mkdir(parents=True)
    (share / "config" / "only_installed.xml").write_text("<profiles/>")
    assert package_file("config/only_installed.xml", share_dir=share) == share / "config" / "only_installed.xml"
    (share / "config" / "fastdds_large_images.xml").write_text("<profiles/>")
    monkeypatch.setattr(package_files, "IMPORT_ROOT", tmp_path / "site-packages")  # the package as installed
    assert source_checkout() is None
    assert (package_file("config/fastdds_large_images.xml", share_dir=share)
            == share / "config" / "fastdds_large_images.xml")


def test_node_settings_validate_every_value_in_one_line():
    """A bad parameter fails configure with one line naming the parameter and what it accepts."""
    import pytest

    from dms_net_ros.node_parameters import NodeSettings

    defaults = {spec.name: spec.default for spec in PARAMETERS}
    settings = NodeSettings.from_parameters(defaults)
    assert settings == NodeSettings() and settings.qos == "sensor_data"
    assert NodeSettings.from_parameters(defaults | {"device": "cuda:1", "qos_depth": "3"}).qos_depth == 3
    for bad, words in (({"qos": "best_effort"}, "qos must be 'sensor_data' or 'reliable'"),
                       ({"image_transport": "theora"}, "image_transport must be"),
                       ({"backend": "openvino"}, "backend must be"),
                       ({"device": "gpu"}, "device must be"),
                       ({"qos_depth": 0}, "qos_depth must be at least 1"),
                       ({"worker_queue_size": 0}, "worker_queue_size must be at least 1"),
                       ({"diagnostics_period_s": 0.0}, "diagnostics_period_s must be a positive"),
                       ({"warmup_iterations": -1}, "warmup_iterations must be 0 or more")):
        with pytest.raises(ValueError, match=words) as err:
            NodeSettings.from_parameters(defaults | bad)
        assert "\n" not in str(err.value)


def test_every_parameter_is_a_settings_field_exactly_once():
    from dms_net_ros.node_parameters import NodeSettings

    owners = [f.name for cls in (NodeSettings, PairingSettings, DecodeSettings, ExamSettings) for f in fields(cls)]
    assert sorted(owners) == sorted(DECLARED) and len(owners) == len(set(owners)) == len(PARAMETERS)
