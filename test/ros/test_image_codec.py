"""Image conversion without cv_bridge: every encoding, step padding, endianness, failures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dms_net_ros.image_codec import (
    RAW_ENCODINGS,
    ImageDecodeError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    msg_to_rgb,
    pixels_to_image_msg,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
    scale_16_to_8,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes catch stride bugs
GREY_RGB = cv2.cvtColor(cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


@pytest.mark.parametrize("encoding", sorted(RAW_ENCODINGS))
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("copy", [True, False])
def test_every_raw_encoding_round_trips(encoding, padding, bigendian, copy):
    """``copy=False`` is what the node uses: padded rgb8 rows raised in NumPy 2 (issue 16)."""
    msg = rgb_to_image_msg(RGB, encoding, row_padding=padding, is_bigendian=bigendian)
    assert msg.step == (RGB.shape[1] * RAW_ENCODINGS[encoding].channels * RAW_ENCODINGS[encoding].bytes_per_channel
                        + padding)
    out = image_msg_to_rgb(msg, copy=copy)
    assert out.dtype == np.uint8 and out.shape == RGB.shape and out.flags.c_contiguous
    assert out.flags.writeable or not copy
    expected = GREY_RGB if RAW_ENCODINGS[encoding].order == "mono" else RGB
    np.testing.assert_array_equal(out, expected)


def test_8uc3_is_read_as_bgr_like_opencv():
    msg = pixels_to_image_msg(cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR), "8UC3")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_16bit_is_scaled_not_truncated_and_endianness_honoured():
    wide = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    for big in (False, True):
        out = image_msg_to_rgb(pixels_to_image_msg(wide, "mono16", is_bigendian=big))
        assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # truncation (& 0xFF) would give 0, 0, 0, 255
    np.testing.assert_array_equal(scale_16_to_8(np.arange(256, dtype=np.uint16) * 257), np.arange(256))
    # a big-endian image mislabelled as little-endian decodes differently: the flag matters
    msg = pixels_to_image_msg(wide, "16UC1", is_bigendian=True)
    msg.is_bigendian = 0
    assert image_msg_to_rgb(msg)[0, :, 0].tolist() != [0, 1, 128, 255]


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding"),
        (lambda m: setattr(m, "step", m.step - 1), "smaller than one row"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-7]), "truncated"),
        (lambda m: (setattr(m, "height", 0), setattr(m, "data", b"")), "empty image"),
    ],
)
def test_bad_raw_messages_raise_one_line_errors(mutate, needle):
    msg = rgb_to_image_msg(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageDecodeError) as err:
        image_msg_to_rgb(msg)
    text = str(err.value)
    assert needle in text and "\n" not in text and ":" in text


def test_max_pixels_refuses_huge_images_before_copying():
    msg = rgb_to_image_msg(RGB, "rgb8")
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        image_msg_to_rgb(msg, max_pixels=RGB.shape[0] * RGB.shape[1] - 1)
    assert image_msg_to_rgb(msg, max_pixels=RGB.shape[0] * RGB.shape[1]).shape == RGB.shape
    png = rgb_to_compressed_msg(RGB, "png")
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        compressed_msg_to_rgb(png, max_pixels=100)


def test_compressed_png_is_lossless_and_jpeg_close():
    np.testing.assert_array_equal(msg_to_rgb(rgb_to_compressed_msg(RGB, "png")), RGB)
    smooth = cv2.GaussianBlur(RGB, (0, 0), 3)
    out = msg_to_rgb(rgb_to_compressed_msg(smooth, "jpeg", quality=98))
    assert np.abs(out.astype(int) - smooth).mean() < 3


def test_compressed_16bit_png_is_scaled():
    from sensor_msgs.msg import CompressedImage

    ok, buf = cv2.imencode(".png", np.full((4, 4), 65535, np.uint16))
    msg = CompressedImage(format="png", data=buf.tobytes())
    assert (compressed_msg_to_rgb(msg) == 255).all()


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0garbage", None])
def test_corrupt_or_empty_jpeg(data):
    msg = rgb_to_compressed_msg(RGB, "jpeg")
    msg.data = bytes(msg.data)[:40] if data is None else data
    with pytest.raises(ImageDecodeError) as err:
        compressed_msg_to_rgb(msg)
    assert ("corrupt" in str(err.value)) or ("empty" in str(err.value))


def test_copy_false_aliases_rgb8_message_memory_and_default_does_not():
    """The node decodes rgb8 without a copy (it keeps the message while it works); everyone
    else gets an array that stays valid after the message is gone."""
    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb, "rgb8")
    view = msg_to_rgb(msg, copy=False)
    kept = msg_to_rgb(msg)
    np.testing.assert_array_equal(view, rgb)
    np.testing.assert_array_equal(kept, rgb)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    assert np.shares_memory(view, buffer) and not np.shares_memory(kept, buffer)
