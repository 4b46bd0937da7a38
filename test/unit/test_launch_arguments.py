"""The rules of diagnose.launch.py's arguments (dms_net_ros/launch_arguments.py), without
launch_ros: omitted means "keep the params file's value", booleans are true/false only, and a
quoted empty value is refused with a line that names the fix."""

from __future__ import annotations

import pytest

from dms_net_ros.launch_arguments import (
    OMITTED,
    PARAMETER_ARGUMENTS,
    REMAP_ARGUMENTS,
    LaunchArgumentError,
    parameter_overrides,
    parse_boolean,
    topic_remappings,
)


def test_omitted_arguments_override_nothing():
    assert parameter_overrides({}) == {}
    assert parameter_overrides({a.name: OMITTED for a in PARAMETER_ARGUMENTS}) == {}
    assert topic_remappings({name: OMITTED for name in REMAP_ARGUMENTS}) == []


def test_given_arguments_override_their_parameter_only():
    assert parameter_overrides({"qos": "reliable", "bundle": "/opt/m", "exam_id": "42"}) == {
        "qos": "reliable", "bundle": "/opt/m", "exam_id": "42"}


@pytest.mark.parametrize("spelling, value", [("true", True), ("True", True), ("TRUE", True), ("false", False),
                                             ("False", False), (" false ", False)])
def test_autostart_accepts_true_and_false_in_any_letter_case(spelling, value):
    assert parameter_overrides({"autostart": spelling}) == {"autostart": value}


@pytest.mark.parametrize("spelling", ["1", "0", "yes", "no", "on", "ture", "flase", "t"])
def test_autostart_refuses_anything_else_with_one_line(spelling):
    with pytest.raises(LaunchArgumentError) as info:
        parameter_overrides({"autostart": spelling})
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"autostart:={spelling} is not a boolean: use autostart:=true or autostart:=false")
    assert "omit autostart to keep the params file's value" in text


@pytest.mark.parametrize("name", [a.name for a in PARAMETER_ARGUMENTS] + list(REMAP_ARGUMENTS))
@pytest.mark.parametrize("quoted", ["''", '""'])
def test_quoted_empty_value_is_refused_naming_the_fix(name, quoted):
    with pytest.raises(LaunchArgumentError, match=f"omit {name} to keep"):
        parameter_overrides({name: quoted}) if name not in REMAP_ARGUMENTS else topic_remappings({name: quoted})


def test_eye_topics_remap_raw_and_compressed_together():
    assert topic_remappings({"left_topic": "/cam/l", "result_topic": "out"}) == [
        ("left/image_raw", "/cam/l"), ("left/image_raw/compressed", "/cam/l/compressed"), ("diagnosis", "out"),
    ]


def test_parse_boolean_is_the_one_rule():
    assert parse_boolean("x", "TrUe") is True
    with pytest.raises(LaunchArgumentError):
        parse_boolean("x", "")


def test_every_description_says_what_omitting_does():
    """The old text "(empty: params file)" described something ros2 launch cannot pass."""
    descriptions = [a.full_description for a in PARAMETER_ARGUMENTS] + [d for _, d in REMAP_ARGUMENTS.values()]
    for text in descriptions:
        assert "omit" in text and "empty" not in text, text
    assert all(a.full_description.endswith("(omit to keep the params file's value)") for a in PARAMETER_ARGUMENTS)


def test_display_is_off_by_default_and_its_values_are_checked():
    from dms_net_ros.launch_arguments import LaunchArgumentError, display_parameters

    assert display_parameters({}) is None and display_parameters({"display": "False"}) is None
    assert display_parameters({"display": "true"}) == {"host": "127.0.0.1", "port": 8080}
    got = display_parameters({"display": "TRUE", "display_port": "0", "display_host": "0.0.0.0", "display_token": "t"})
    assert got == {"host": "0.0.0.0", "port": 0, "token": "t"}
    for bad in ({"display": "yes"}, {"display": "true", "display_port": "http"},
                {"display": "true", "display_port": "70000"}):
        with pytest.raises(LaunchArgumentError):
            display_parameters(bad)
