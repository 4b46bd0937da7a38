"""sensor_msgs Image / CompressedImage <-> RGB uint8 numpy, without cv_bridge.

ROS 2's cv_bridge is not installable from PyPI (and PyPI's `cv-bridge` is ROS 1's, which
maps 16UC1 to 8 bit by truncation), so the node converts images itself with numpy:

* Raw images honour ``step`` (row padding) and ``is_bigendian``; 16-bit images are scaled
  to 8 bit over the full range (``round(v * 255 / 65535)``), never truncated, so a mono16
  fundus frame keeps its contrast.
* ``8UCn`` / ``16UCn`` carry no colour order; like OpenCV (and cv_bridge) we read 3- and
  4-channel ones as BGR / BGRA.
* Compressed images (jpeg, png, anything ``cv2.imdecode`` reads) are decoded by OpenCV.
* Every failure raises `ImageDecodeError` with one line naming the cause and the fix; the
  node turns it into an ERROR result and keeps serving.

Decoding uses only the message's attributes (duck typing), so this module is testable
without rclpy; the reverse direction (numpy -> message, for tests, the demo and the bag
tools) imports `sensor_msgs` lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class DecodeSettings:
    """Decoding's knob. The field name is the node's parameter name and the default its default
    (`dms_net_ros.node_parameters` builds its table from it; the bag tools decode with it)."""

    #: 16.8 MP per eye (4096 x 4096); a 2048x1536 clinical frame is 3.1 MP
    max_pixels: int = field(default=4096 * 4096, metadata={
        "description": "images with more pixels are refused with an ERROR result (memory guard)"})


#: Default refusal limit (`DecodeSettings.max_pixels`).
DEFAULT_MAX_PIXELS = DecodeSettings.max_pixels


class ImageDecodeError(ValueError):
    """A message that cannot become an RGB image; ``str(err)`` is one line: cause and fix."""


@dataclass(frozen=True)
class RawEncoding:
    """Memory layout of one raw ``sensor_msgs/Image`` encoding."""

    channels: int
    bytes_per_channel: int  # 1 or 2
    order: str  # "rgb", "bgr", "rgba", "bgra" or "mono"


RAW_ENCODINGS: dict[str, RawEncoding] = {
    "rgb8": RawEncoding(3, 1, "rgb"),
    "bgr8": RawEncoding(3, 1, "bgr"),
    "rgba8": RawEncoding(4, 1, "rgba"),
    "bgra8": RawEncoding(4, 1, "bgra"),
    "mono8": RawEncoding(1, 1, "mono"),
    "rgb16": RawEncoding(3, 2, "rgb"),
    "bgr16": RawEncoding(3, 2, "bgr"),
    "rgba16": RawEncoding(4, 2, "rgba"),
    "bgra16": RawEncoding(4, 2, "bgra"),
    "mono16": RawEncoding(1, 2, "mono"),
    "8UC1": RawEncoding(1, 1, "mono"),
    "8UC3": RawEncoding(3, 1, "bgr"),
    "8UC4": RawEncoding(4, 1, "bgra"),
    "16UC1": RawEncoding(1, 2, "mono"),
    "16UC3": RawEncoding(3, 2, "bgr"),
    "16UC4": RawEncoding(4, 2, "bgra"),
}

_TO_RGB = {
    "rgb": None,
    "bgr": cv2.COLOR_BGR2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "bgra": cv2.COLOR_BGRA2RGB,
    "mono": cv2.COLOR_GRAY2RGB,
}
_FROM_RGB = {
    "rgb": None,
    "bgr": cv2.COLOR_RGB2BGR,
    "rgba": cv2.COLOR_RGB2RGBA,
    "bgra": cv2.COLOR_RGB2BGRA,
    "mono": cv2.COLOR_RGB2GRAY,
}


def _lookup_encoding(encoding: str) -> RawEncoding:
    enc = (RAW_ENCODINGS.get(encoding) or RAW_ENCODINGS.get(encoding.strip().lower())
           or RAW_ENCODINGS.get(encoding.strip().upper()))
    if enc is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}: publish one of {', '.join(RAW_ENCODINGS)} "
            "(or use image_transport=compressed)"
        )
    return enc


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageDecodeError(
            f"image {width}x{height} has {height * width} pixels, over max_pixels={max_pixels}: "
            "downscale at the camera or raise the max_pixels parameter"
        )


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """Full-range 16 -> 8 bit scaling with rounding (0 -> 0, 65535 -> 255)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(pixels: np.ndarray, order: str, copy: bool = True) -> np.ndarray:
    code = _TO_RGB[order]
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if code is None:
        if copy:  # by default copy: the result must not alias (read-only) message memory
            return np.array(pixels, dtype=np.uint8, order="C", copy=True)
        # Alias when the rows are contiguous, copy when ``step`` pads them: NumPy 2 raises
        # "Unable to avoid copy" for np.array(copy=False) on a padded view (issue 16).
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(pixels), code))


def image_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, *, copy: bool = True) -> np.ndarray:
    """Raw ``sensor_msgs/Image`` -> RGB uint8 HxWx3.

    By default a new array, safe to keep. ``copy=False`` lets an rgb8 image without row
    padding alias the message's buffer (saves a ~2 ms copy of a 2048x1536 frame): only for
    callers that finish with the pixels while they still hold the message (the node). With
    padded rows (``step > width * channels``) it copies, as every other encoding does.
    """
    enc = _lookup_encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data
    size = len(data)
    if height == 0 or width == 0 or size == 0:
        raise ImageDecodeError(
            f"empty image ({width}x{height}, {size} data bytes): check that the camera driver filled the message"
        )
    _check_pixels(height, width, max_pixels)
    row_bytes = width * enc.channels * enc.bytes_per_channel
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than one row of {width} px x {enc.channels} ch x {enc.bytes_per_channel} B "
            f"= {row_bytes} B for {msg.encoding}: fix the publisher's step/encoding"
        )
    if size != step * height:
        raise ImageDecodeError(
            f"data has {size} bytes but step {step} x height {height} = {step * height}: "
            "fix the publisher's step/height (the message is truncated or mislabelled)"
        )
    buf = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if enc.bytes_per_channel == 1:
        pixels = buf.reshape(height, width, enc.channels)
    else:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        wide = np.ascontiguousarray(buf).view(dtype).reshape(height, width, enc.channels)
        pixels = scale_16_to_8(wide)
    return _to_rgb(pixels, enc.order, copy)


def compressed_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg, png, ...) -> RGB uint8 HxWx3."""
    data = msg.data
    if len(data) == 0:
        raise ImageDecodeError(f"empty compressed image (format {msg.format!r}): "
                               "check that the camera driver filled the message")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageDecodeError(
            f"cannot decode {len(data)}-byte compressed image (format {msg.format!r}): "
            "the JPEG/PNG stream is corrupt or truncated; check the camera link or use raw transport"
        )
    _check_pixels(img.shape[0], img.shape[1], max_pixels)
    if img.dtype == np.uint16:
        img = scale_16_to_8(img)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"compressed image decodes to {img.dtype}: publish 8- or 16-bit jpeg/png")
    if img.ndim == 2 or img.shape[2] == 1:
        return _to_rgb(img, "mono")
    return _to_rgb(img, "bgra" if img.shape[2] == 4 else "bgr")


def msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, *, copy: bool = True) -> np.ndarray:
    """Either message type -> RGB uint8 HxWx3 (CompressedImage is recognised by ``format``);
    ``copy`` as in `image_msg_to_rgb` (a decoded JPEG is always a new array)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_msg_to_rgb(msg, max_pixels)
    return image_msg_to_rgb(msg, max_pixels, copy=copy)


# --- numpy -> message (tests, demo, bag tools) --------------------------------------------


def rgb_to_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 -> the HxWxC array a raw ``encoding`` stores (colour order and bit depth)."""
    enc = _lookup_encoding(encoding)
    code = _FROM_RGB[enc.order]
    pixels = rgb if code is None else cv2.cvtColor(rgb, code)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if enc.bytes_per_channel == 2:
        pixels = pixels.astype(np.uint16) * 257  # 255 -> 65535: inverse of scale_16_to_8
    return np.ascontiguousarray(pixels)


def pixels_to_image_msg(
    pixels: np.ndarray,
    encoding: str,
    *,
    stamp: Any = None,
    frame_id: str = "",
    row_padding: int = 0,
    is_bigendian: bool = False,
) -> Any:
    """Pack an HxWxC (or HxW) uint8/uint16 array as a raw ``sensor_msgs/Image``.

    ``row_padding`` extra bytes per row exercise ``step`` handling; ``is_bigendian``
    byte-swaps 16-bit data.
    """
    from sensor_msgs.msg import Image

    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if is_bigendian else "<u2")
    raw = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    if row_padding:
        raw = np.concatenate([raw, np.zeros((height, row_padding), np.uint8)], axis=1)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = int(bool(is_bigendian))
    msg.step = raw.shape[1]
    msg.data = raw.tobytes()
    return msg


def rgb_to_image_msg(rgb: np.ndarray, encoding: str = "rgb8", **kwargs: Any) -> Any:
    """RGB uint8 -> raw ``sensor_msgs/Image`` in ``encoding`` (kwargs: see `pixels_to_image_msg`)."""
    return pixels_to_image_msg(rgb_to_pixels(rgb, encoding), encoding, **kwargs)


def rgb_to_compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", *, quality: int = 95, stamp: Any = None,
                          frame_id: str = "") -> Any:
    """RGB uint8 -> ``sensor_msgs/CompressedImage`` (``fmt`` "jpeg" or "png")."""
    from sensor_msgs.msg import CompressedImage

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ValueError(f"unsupported compressed format {fmt!r}: use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = buf.tobytes()
    return msg
