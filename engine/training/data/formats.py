"""Readers (and the HC-STVG writer) for the on-disk annotation formats users have.

Every reader yields `GroundingItem`s: one caption on one video (or image) with its ground truth,
frames 1-based and inclusive, boxes `xyxy` in pixels keyed by frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class FormatError(ValueError):
    pass


@dataclass(frozen=True)
class GroundingItem:
    vid: str
    media: Path  # video file, or image for REC
    caption: str
    task: str  # stvg | vtg | rec
    width: int = 0
    height: int = 0
    fps: float = 0.0
    n_frames: int = 0
    gt_span: tuple[int, int] | None = None  # 1-based inclusive frames (stvg), None for a negative
    gt_span_s: tuple[float, float] | None = None  # seconds (vtg)
    gt_boxes: dict = field(default_factory=dict)  # frame -> xyxy (stvg), {1: xyxy} for rec


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: {exc}") from None


def read_hcstvg(anno: str | Path, videos: str | Path) -> list[GroundingItem]:
    data = _load_json(anno)
    if not isinstance(data, dict):
        raise FormatError(f"{anno}: HC-STVG annotations are one JSON object keyed by video id")
    items = []
    for vid, a in data.items():
        try:
            common = dict(vid=vid, media=Path(videos) / f"{vid}.mp4", caption=a["caption"], task="stvg", width=int(a["width"]),
                          height=int(a["height"]), fps=float(a["fps"]), n_frames=int(a["img_num"]))
            if a.get("negative"):
                items.append(GroundingItem(**common))
                continue
            st, ed = int(a["st_frame"]), int(a["ed_frame"])
            boxes = a["bbox"]
            if len(boxes) != ed - st + 1:
                raise FormatError(f"{anno}: {vid}: {len(boxes)} boxes for frames {st}..{ed}")
            gt = {st + k: (x, y, x + w, y + h) for k, (x, y, w, h) in enumerate(boxes)}
            items.append(GroundingItem(**common, gt_span=(st, ed), gt_boxes=gt))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"{anno}: {vid}: malformed entry ({exc!r})") from None
    return items


def read_vidstg(anno: str | Path, videos: str | Path) -> list[GroundingItem]:
    """VidSTG: a list (or dict) of `{vid, frame_count, fps, width, height, temporal_gt{begin_fid, end_fid},
    captions[{description, target_id}], trajectories{target_id: [{fid, bbox[x1,y1,x2,y2]} | null per frame]}}`."""
    data = _load_json(anno)
    entries = data.values() if isinstance(data, dict) else data
    items = []
    for a in entries:
        try:
            vid = str(a["vid"])
            b, e = int(a["temporal_gt"]["begin_fid"]), int(a["temporal_gt"]["end_fid"])  # 0-based inclusive
            for k, cap in enumerate(a["captions"]):
                traj = a["trajectories"][str(cap["target_id"])]
                boxes = {}
                for t in traj:
                    if t and b <= int(t["fid"]) <= e:
                        boxes[int(t["fid"]) + 1] = tuple(float(v) for v in t["bbox"])
                items.append(GroundingItem(f"{vid}#{k}", Path(videos) / f"{vid}.mp4", cap["description"], "stvg",
                                           int(a["width"]), int(a["height"]), float(a["fps"]), int(a["frame_count"]),
                                           (b + 1, e + 1), None, boxes))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{anno}: malformed VidSTG entry ({exc!r})") from None
    return items


def read_charades(anno: str | Path, videos: str | Path) -> list[GroundingItem]:
    """Charades-STA: `<vid> <start> <end>##<query>` per line (seconds)."""
    items = []
    for n, line in enumerate(Path(anno).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            head, query = line.split("##", 1)
            vid, s, e = head.split()
            items.append(GroundingItem(f"{vid}#{n}", Path(videos) / f"{vid}.mp4", query.strip(), "vtg",
                                       gt_span_s=(float(s), float(e))))
        except ValueError:
            raise FormatError(f"{anno}:{n}: expected '<vid> <start> <end>##<query>', got {line!r}") from None
    return items


def read_refcoco(anno: str | Path, images: str | Path) -> list[GroundingItem]:
    """RefCOCO (refer-style, flattened): a list of `{image_id, file_name, width, height, bbox[x,y,w,h], sentences[{sent}]}`."""
    data = _load_json(anno)
    items = []
    for a in data:
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
            for k, s in enumerate(a["sentences"]):
                items.append(GroundingItem(f"{a['image_id']}#{k}", Path(images) / a["file_name"], s["sent"], "rec",
                                           int(a["width"]), int(a["height"]), gt_boxes={1: (x, y, x + w, y + h)}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{anno}: malformed RefCOCO entry ({exc!r})") from None
    return items


READERS = {"hcstvg": read_hcstvg, "vidstg": read_vidstg, "charades": read_charades, "refcoco": read_refcoco}


@dataclass(frozen=True)
class ClipSpec:
    """One held-out clip before rendering: its scene, caption and target (None: a negative)."""

    scene: object
    caption: str
    target: object | None
    fps: int
    n_frames: int
    frames_present: tuple[int, ...]  # 0-based frames where the target is visible


def draw_clip(rng, seconds: float, negative_rate: float, fps_choices=(10, 12, 15)) -> ClipSpec:
    """A scene of spec v1 at a random resolution and frame rate, with an unambiguous caption (or a negative one)."""
    from engine.training.data.synthetic import negative_caption
    from stream.scenes import RESOLUTIONS_WH, box_at, random_scene, unambiguous_caption

    w, h = RESOLUTIONS_WH[int(rng.integers(len(RESOLUTIONS_WH)))]
    fps = int(fps_choices[int(rng.integers(len(fps_choices)))])
    n_frames = int(round(seconds * fps))
    while True:
        scene = random_scene(rng, seconds, (w, h))
        if rng.random() < negative_rate:
            caption, target = negative_caption(scene, rng), None
        else:
            target = scene.objects[int(rng.integers(len(scene.objects)))]
            caption = unambiguous_caption(target, tuple(o for o in scene.objects if o is not target), rng)
            if caption is None:
                continue
        present = tuple(k for k in range(n_frames) if target is not None and box_at(target, k / fps, w, h) is not None)
        if target is not None and not present:
            continue
        return ClipSpec(scene, caption, target, fps, n_frames, present)


def write_hcstvg_clips(out: str | Path, n: int, seed: int = 0, seconds: float = 8.0, negative_rate: float = 0.2,
                       fps_choices=(10, 12, 15), progress=lambda i: None, style_shift: bool = False,
                       real_background: bool = False) -> Path:
    """Render `n` held-out clips (real H.264 MP4s, varied resolution and background) plus `anno.json`.

    `style_shift`: the same scenes and captions as without it (its draws come from a separate generator), through
    a camera style the training data never shows (`engine.training.data.style_shift`). `real_background`: the same
    scenes and captions drawn over real footage from time ranges training never uses
    (`engine.training.data.real_background`, split "held_out")."""
    import av
    import numpy as np

    from engine.training.data.real_background import RealBackground
    from engine.training.data.style_shift import StyleShift
    from stream.scenes import box_at, render_frame

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    anno = {}
    for i in range(n):
        rng = np.random.default_rng([seed, 7919, i])
        spec = draw_clip(rng, seconds, negative_rate, fps_choices)
        scene, caption, target, fps, n_frames = spec.scene, spec.caption, spec.target, spec.fps, spec.n_frames
        w, h = scene.width, scene.height
        style_rng = np.random.default_rng([seed, 7919, i, 1])
        style = StyleShift.draw(style_rng) if style_shift else None
        backdrop = (RealBackground.draw(np.random.default_rng([seed, 7919, i, 2]), (w, h), "held_out", seconds)
                    if real_background else None)
        vid = f"syn{seed:03d}_{i:05d}"
        with av.open(str(out / "videos" / f"{vid}.mp4"), "w") as c:
            st = c.add_stream("libx264", rate=fps)
            st.width, st.height, st.pix_fmt = w, h, "yuv420p"
            crf = int(rng.integers(20, 32))
            st.options = {"crf": str(style.crf if style else crf), "preset": "ultrafast"}
            for k in range(n_frames):
                frame = render_frame(scene, k / fps, rng, None if backdrop is None else backdrop.frame_at(k / fps))
                if style is not None:
                    frame = style.apply(frame, style_rng)
                for pkt in st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(pkt)
            for pkt in st.encode():
                c.mux(pkt)
        entry = {"caption": caption, "width": w, "height": h, "fps": fps, "img_num": n_frames}
        if target is None:
            entry["negative"] = True
        else:
            frames_present = spec.frames_present
            st_f, ed_f = frames_present[0], frames_present[-1]
            boxes = []
            for k in range(st_f, ed_f + 1):
                b = box_at(target, k / fps, w, h) or box_at(target, frames_present[0] / fps, w, h)
                boxes.append([round(b[0], 1), round(b[1], 1), round(b[2] - b[0], 1), round(b[3] - b[1], 1)])
            entry.update(st_frame=st_f + 1, ed_frame=ed_f + 1, bbox=boxes, st_time=round(st_f / fps, 3), ed_time=round(ed_f / fps, 3))
        anno[vid] = entry
        progress(i)
    path = out / "anno.json"
    path.write_text(json.dumps(anno))
    return path
