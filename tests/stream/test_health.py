"""Camera health: drops by reason, as stored in Redis and as the API shows them."""
from __future__ import annotations

from stream.health import CameraHealth, CameraState


def test_from_dict_when_written_with_every_reason_round_trips():
    h = CameraHealth("c").moved(CameraState.RUNNING, frames_decoded=40, frames_dropped=16, frames_dropped_late=1,
                                frames_dropped_redis=3, frames_dropped_overload=12)
    assert CameraHealth.from_dict("c", {k.encode(): v.encode() for k, v in h.to_dict().items()}) == h


def test_from_dict_when_written_before_overload_drops_were_counted_reads_them_as_zero():
    # given a health record an older ingest wrote: no frames_dropped_overload field
    old = {"state": "running", "fps": "25.00", "last_frame_ts": "1.000", "frames_decoded": "50", "frames_dropped": "2",
           "frames_dropped_redis": "1", "frames_dropped_late": "1", "frames_stored": "4", "windows": "1",
           "reconnects": "0", "last_error": "", "updated_at": "2.000"}
    # when read
    h = CameraHealth.from_dict("c", old)
    # then it reads, with no overload drops
    assert (h.frames_dropped, h.frames_dropped_late, h.frames_dropped_redis, h.frames_dropped_overload) == (2, 1, 1, 0)


def test_to_json_lists_every_drop_reason():
    h = CameraHealth("c").moved(CameraState.RUNNING, frames_dropped=6, frames_dropped_late=1, frames_dropped_redis=2,
                                frames_dropped_overload=3)
    assert h.to_json()["dropped"] == {"late": 1, "redis": 2, "overload": 3}
