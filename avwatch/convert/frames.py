"""Per-frame pixel work of the converter: the luma plane at analysis size and a tiny RGB thumbnail.

Chosen by measurement (docs/benchmarks.md): the Y plane of a planar 8-bit YUV frame is used as a numpy
view without colour conversion; OpenCV's INTER_AREA does the downscale (it averages, so it does not
alias and it tames sensor noise); the thumbnail is built from the planes at thumbnail size with a
BT.601/709 matrix, far cheaper than converting the full picture to RGB.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# 8-bit planar YUV layouts whose plane 0 is the luma plane and planes 1, 2 are subsampled chroma.
PLANAR_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv410p"}
FULL_RANGE_FORMATS = {"yuvj420p", "yuvj422p", "yuvj444p"}

# AVColorRange / AVColorSpace values as PyAV reports them.
RANGE_MPEG, RANGE_JPEG = 1, 2
SPACE_BT709 = 1


def analysis_size(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The analysis size: given one side, the other keeps the aspect ratio (even numbers)."""
    if width and height:
        return int(width), int(height)
    if width:
        return int(width), max(2, int(round(src_h * width / src_w / 2)) * 2)
    if height:
        return max(2, int(round(src_w * height / src_h / 2)) * 2), int(height)
    return src_w, src_h


def plane_view(plane, width: int, height: int) -> np.ndarray:
    """A numpy view of one 8-bit plane (no copy), cropped from its line size to its width."""
    buf = np.frombuffer(plane, np.uint8)
    return buf.reshape(-1, plane.line_size)[:height, :width]


def luma_full(frame) -> np.ndarray:
    """The full-size 8-bit luma plane of a decoded frame (a view when the format allows)."""
    name = frame.format.name
    if name in PLANAR_8BIT or name in ("nv12", "nv21", "gray"):
        return plane_view(frame.planes[0], frame.width, frame.height)
    # 10/12-bit, RGB, paletted...: let swscale produce 8-bit grey once.
    return frame.reformat(format="gray").to_ndarray()


def is_full_range(frame) -> bool:
    if frame.format.name in FULL_RANGE_FORMATS:
        return True
    return int(frame.color_range or 0) == RANGE_JPEG


def scale_luma(y: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale a uint8 plane by area averaging: exact 2x halvings (OpenCV's fast path), then one last
    bilinear step (< 2x). Measured at 1080p -> 320x180: ~5x cheaper than one INTER_AREA resize, and unlike
    INTER_LINEAR it does not alias fine detail or pass sensor noise through unattenuated."""
    if y.shape == (height, width):
        return np.ascontiguousarray(y)
    if y.shape[1] < width or y.shape[0] < height:
        return cv2.resize(y, (width, height), interpolation=cv2.INTER_LINEAR)
    while y.shape[1] // 2 >= width and y.shape[0] // 2 >= height:
        y = cv2.resize(y, (y.shape[1] // 2, y.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if y.shape != (height, width):  # the remaining factor is < 2: bilinear is close to area here, 5x cheaper
        y = cv2.resize(y, (width, height), interpolation=cv2.INTER_LINEAR)
    return y


@lru_cache(maxsize=8)
def _yuv_to_rgb(full_range: bool, bt709: bool) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, offset) taking 8-bit (Y, U, V) to full-range RGB for a range and a matrix."""
    kr, kb = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    kg = 1.0 - kr - kb
    to_rgb = np.array([[1.0, 0.0, 2 * (1 - kr)],
                       [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
                       [1.0, 2 * (1 - kb), 0.0]])
    # limited range: Y 16..235, C 16..240 (centred on 128)
    y_scale, c_scale, y_zero = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    m = to_rgb @ np.diag([y_scale, c_scale, c_scale])
    offset = -(m @ np.array([y_zero, 128.0, 128.0])) + 0.5  # + 0.5: round on the cast to uint8
    return m.astype(np.float32), offset.astype(np.float32)


def thumbnail_rgb(frame, y_small: np.ndarray, width: int, height: int) -> np.ndarray:
    """A height x width x 3 uint8 RGB thumbnail (full range) of a decoded frame.

    y_small is the analysis-size luma (already computed): the thumbnail's luma comes from it, and the
    chroma planes are reduced by the same halving area steps as the luma (measured at 1080p: ~0.1 ms,
    against ~0.4 ms for swscale to RGB and ~0.9 ms for area-resizing the full planes). BT.709 for HD
    (or when flagged), BT.601 otherwise, in one 3x3 transform."""
    name = frame.format.name
    if name not in PLANAR_8BIT:
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    cw, ch = frame.planes[1].width, frame.planes[1].height
    yuv = cv2.merge([scale_luma(y_small, width, height),
                     scale_luma(plane_view(frame.planes[1], cw, ch), width, height),
                     scale_luma(plane_view(frame.planes[2], cw, ch), width, height)]).astype(np.float32)
    space = int(frame.colorspace or 0)
    m, offset = _yuv_to_rgb(is_full_range(frame), space == SPACE_BT709 or (frame.height >= 720 and space == 2))
    rgb = cv2.transform(yuv, m) + offset
    return np.clip(rgb, 0, 255).astype(np.uint8)


THUMB_JPEG_QUALITY = 90  # ~1.6 kB at 64x36, against 6.9 kB raw; colour error small enough for bars/solid


def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, THUMB_JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of a thumbnail failed")
    return buf.tobytes()
