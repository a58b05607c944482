"""Small datasets in the four on-disk formats, from rendered clips: for tests, smoke runs and benchmarks.

`write_format_samples` renders `n` HC-STVG clips (real H.264 MP4s, `formats.write_hcstvg_clips`) and writes
the same targets as VidSTG and Charades-STA annotations over those videos, and as RefCOCO over PNG stills
of each target's first visible frame. `write_mixture` puts them in a mixture file (`engine/training/data/mixture.py`).
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import yaml

from engine.training.data.formats import write_hcstvg_clips
from stream.imagecodec import encode_image


def write_format_samples(out: str | Path, n: int = 3, seed: int = 0, seconds: float = 2.0) -> dict[str, tuple[Path, Path]]:
    """{format: (annotation file, media directory)} for hcstvg, vidstg, charades and refcoco."""
    out = Path(out)
    hc_anno = write_hcstvg_clips(out / "hcstvg", n, seed=seed, seconds=seconds, negative_rate=0.0, fps_choices=(10,))
    videos = out / "hcstvg" / "videos"
    hc = json.loads(hc_anno.read_text())
    vidstg, charades, refcoco = [], [], []
    (out / "refcoco" / "images").mkdir(parents=True, exist_ok=True)
    for vid, a in hc.items():
        st, ed, fps = a["st_frame"], a["ed_frame"], a["fps"]
        traj = [None] * a["img_num"]
        for k, (x, y, w, h) in enumerate(a["bbox"]):
            traj[st - 1 + k] = {"fid": st - 1 + k, "bbox": [x, y, x + w, y + h]}
        vidstg.append({"vid": vid, "frame_count": a["img_num"], "fps": fps, "width": a["width"], "height": a["height"],
                       "temporal_gt": {"begin_fid": st - 1, "end_fid": ed - 1},
                       "captions": [{"description": a["caption"], "target_id": 0}], "trajectories": {"0": traj}})
        charades.append(f"{vid} {(st - 1) / fps:.2f} {ed / fps:.2f}##{a['caption']}")
        with av.open(str(videos / f"{vid}.mp4")) as c:
            frame = next(f for k, f in enumerate(c.decode(video=0)) if k == st - 1).to_ndarray(format="rgb24")
        (out / "refcoco" / "images" / f"{vid}.png").write_bytes(encode_image(frame, "png"))
        refcoco.append({"image_id": vid, "file_name": f"{vid}.png", "width": a["width"], "height": a["height"],
                        "bbox": a["bbox"][0], "sentences": [{"sent": a["caption"]}]})
    (out / "vidstg").mkdir(exist_ok=True)
    (out / "vidstg" / "anno.json").write_text(json.dumps(vidstg))
    (out / "charades").mkdir(exist_ok=True)
    (out / "charades" / "anno.txt").write_text("\n".join(charades) + "\n")
    (out / "refcoco" / "anno.json").write_text(json.dumps(refcoco))
    return {"hcstvg": (hc_anno, videos), "vidstg": (out / "vidstg" / "anno.json", videos),
            "charades": (out / "charades" / "anno.txt", videos), "refcoco": (out / "refcoco" / "anno.json", out / "refcoco" / "images")}


def write_mixture(path: str | Path, sets: dict[str, tuple[Path, Path]], weights: dict[str, float] | None = None,
                  negative_rate: float = 0.2) -> Path:
    """A mixture YAML over `sets` (as `write_format_samples` returns them), paths relative to its folder."""
    path = Path(path)
    def rel(p: Path) -> str:  # relative to the mixture file when below its folder, else absolute
        p = Path(p).resolve()
        return str(p.relative_to(path.parent.resolve())) if p.is_relative_to(path.parent.resolve()) else str(p)

    sources = [{"name": fmt, "format": fmt, "anno": rel(anno), "media": rel(media), "weight": (weights or {}).get(fmt, 1.0)}
               for fmt, (anno, media) in sets.items()]
    path.write_text(yaml.safe_dump({"negative_rate": negative_rate, "sources": sources}, sort_keys=False))
    return path
