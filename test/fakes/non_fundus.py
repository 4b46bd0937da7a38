"""Images that are not fundus photographs, for the quality gate's tests and benchmark.

Two sources, both available in a fresh clone after ``scripts/setup.sh``:

* `synthetic_non_fundus`: generated here, deterministic: noise of several kinds (uniform,
  grey, Gaussian, fundus-coloured, blue, salt-and-pepper, smooth blobs), flat fills,
  gradients, checkerboards, a text page, a terminal and a UI screenshot, a synthetic outdoor
  scene, and the hardest family: a fundus-coloured disc on black filled with noise, blobs,
  a checkerboard, a gradient or nothing.
* `library_photographs`: real photographs of other things shipped inside installed
  packages (scikit-image's sample data, a test requirement; scikit-learn's and matplotlib's
  when present): a cat, an astronaut, coffee, coins, a rocket, the moon, text, tissue under
  a microscope, gravel, grass, bricks, a motorcycle, the Hubble deep field... Each is also
  offered cropped into a round black vignette (`in_round_vignette`), the shape of a fundus
  photograph.

scikit-image also ships ``retina.jpg``, a real fundus photograph from another camera:
`library_fundus` returns it for the "must still pass" side.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

#: (package, file) of the real non-fundus photographs looked up by `library_photographs`.
LIBRARY_PHOTOGRAPHS: tuple[tuple[str, str], ...] = (
    *(("skimage", f"data/{name}") for name in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "chessboard_RGB.png", "clock_motion.png",
        "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg",
        "ihc.png", "logo.png", "moon.png", "motorcycle_left.png", "page.png", "phantom.png", "rocket.jpg", "text.png",
    )),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("matplotlib", "mpl-data/sample_data/logo2.png"),
)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def library_photographs() -> dict[str, np.ndarray]:
    """``{"photo:<file>": RGB}`` for every `LIBRARY_PHOTOGRAPHS` entry that is installed."""
    out = {}
    for package, relative in LIBRARY_PHOTOGRAPHS:
        path = _package_file(package, relative)
        rgb = None if path is None else _read_rgb(path)
        if rgb is not None:
            out[f"photo:{path.name}"] = rgb
    return out


def library_fundus() -> np.ndarray | None:
    """scikit-image's ``retina.jpg`` (a real fundus photograph, 1411 px), or None."""
    path = _package_file("skimage", "data/retina.jpg")
    return None if path is None else _read_rgb(path)


def _disc_mask(size: int, radius: float = 0.45) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (radius * size) ** 2


def in_round_vignette(rgb: np.ndarray, size: int = 512) -> np.ndarray:
    """``rgb`` resized to ``size`` and cropped into a centred disc on black (a fundus's frame)."""
    square = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    out = np.zeros_like(square)
    disc = _disc_mask(size, 0.47)
    out[disc] = square[disc]
    return out


def _text_page(size: int, ink: tuple[int, int, int], paper: tuple[int, int, int], text: str) -> np.ndarray:
    page = np.full((size, size, 3), paper, np.uint8)
    for i in range(size // 25):
        cv2.putText(page, f"{text} {i}", (5, 20 + i * 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ink, 1, cv2.LINE_AA)
    return page


def _ui_screenshot(size: int) -> np.ndarray:
    ui = np.full((size, size, 3), 240, np.uint8)
    cv2.rectangle(ui, (0, 0), (size, 40), (50, 80, 160), -1)
    for i in range(6):
        cv2.rectangle(ui, (20, 60 + i * 70), (size - 20, 110 + i * 70), (255, 255, 255), -1)
        cv2.putText(ui, f"Button {i}", (30, 95 + i * 70), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (20, 20, 20), 2, cv2.LINE_AA)
    return ui


def _outdoor_scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """Sky gradient, a sun, textured green ground and dark tree crowns."""
    scene = np.zeros((size, size, 3), np.float32)
    half = size // 2
    scene[:half] = np.linspace([90, 140, 230], [200, 220, 250], half)[:, None, :]
    grass = cv2.GaussianBlur(rng.normal(0, 1, (size - half, size)).astype(np.float32), (0, 0), 2)
    scene[half:] = np.clip(grass[..., None] * 20 + np.array([70, 120, 40], np.float32), 0, 255)
    cv2.circle(scene, (int(size * 0.78), int(size * 0.16)), size // 17, (255, 240, 180), -1)
    for _ in range(8):
        cv2.circle(scene, (int(rng.integers(0, size)), half), int(rng.integers(size // 25, size // 10)), (30, 80, 30),
                   -1)
    return scene.astype(np.uint8)


def synthetic_non_fundus(size: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: RGB uint8 size x size}``: the generated cases of the module docstring."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    fundus_colour = np.array([170, 80, 30], np.float32)

    def noise(scale, mean) -> np.ndarray:
        return np.clip(rng.normal(0, 1, shape) * scale + mean, 0, 255).astype(np.uint8)

    def disc(img: np.ndarray) -> np.ndarray:
        out = np.zeros_like(img)
        mask = _disc_mask(size)
        out[mask] = img[mask]
        return out

    checker = ((xx // 32 + yy // 32) % 2).astype(bool)
    blobs = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 3)
    blobs /= blobs.std()
    salt_pepper = np.full(shape, 128, np.uint8)
    u = rng.random((size, size))
    salt_pepper[u < 0.1], salt_pepper[u > 0.9] = 0, 255
    return {
        "uniform noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "grey uniform noise": np.repeat(rng.integers(0, 256, (size, size, 1), dtype=np.uint8), 3, axis=2),
        "gaussian noise": noise(40, 128),
        "fundus-coloured gaussian noise": noise(np.array([40, 25, 10]), fundus_colour),
        "blue noise": noise(30, np.array([40, 60, 180])),
        "salt and pepper": salt_pepper,
        "smooth colour noise": cv2.resize(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), (size, size),
                                          interpolation=cv2.INTER_CUBIC),
        "flat orange": np.full(shape, (200, 90, 40), np.uint8),
        "flat grey": np.full(shape, 128, np.uint8),
        "gradient": np.dstack([xx * 255 // size, yy * 255 // size, np.full((size, size), 100)]).astype(np.uint8),
        "checkerboard": np.repeat((checker * 255).astype(np.uint8)[..., None], 3, axis=2),
        "text page": _text_page(size, (0, 0, 0), (255, 255, 255), "Lorem ipsum dolor sit amet"),
        "terminal screenshot": _text_page(size, (0, 255, 0), (0, 0, 0), "$ ls -la /dev/shm"),
        "ui screenshot": _ui_screenshot(size),
        "outdoor scene": _outdoor_scene(size, rng),
        "fundus-coloured disc of gaussian noise": disc(noise(np.array([50, 30, 15]), fundus_colour)),
        "fundus-coloured disc of faint noise": disc(noise(np.array([6, 4, 2]), fundus_colour)),
        "disc of uniform noise": disc(rng.integers(0, 256, shape, dtype=np.uint8)),
        "fundus-coloured disc of smooth blobs": disc(
            np.clip(blobs * np.array([30, 20, 8]) + fundus_colour, 0, 255).astype(np.uint8)),
        "fundus-coloured checkerboard disc": disc(
            np.where(checker[..., None], np.uint8([220, 110, 50]), np.uint8([120, 50, 20]))),
        "flat fundus-coloured disc": disc(np.full(shape, (200, 90, 40), np.uint8)),
        "fundus-coloured gradient disc": disc(
            np.dstack([xx * 200 // size + 50, yy * 100 // size + 30, np.full((size, size), 20)]).astype(np.uint8)),
    }
