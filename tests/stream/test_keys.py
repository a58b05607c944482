"""The key layout: what one transaction touches shares one Cluster hash slot; shards are stable and spread."""
from __future__ import annotations

import pytest
from redis.crc import key_slot

from stream.keys import Keys, LayoutMismatch, check_layout


def slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("camera", ["demo", "door-1", "cam.7", "x" * 64])
def test_everything_a_window_commit_touches_is_in_one_slot(camera):
    k = Keys("svl:", 8)
    shard = k.shard_of(camera)
    commit = [k.windows(shard), k.window_done(camera, f"{camera}:123"), k.event_state(camera, "q1"),
              k.event_state(camera, "q2"), k.open_events(shard), k.events(shard), k.event_record(shard, "abc"),
              k.dead_windows(shard)]
    assert len({slot(key) for key in commit}) == 1
    # a window's frames are read with one MGET: one slot, the camera's own
    assert len({slot(k.frame(camera, ts)) for ts in (1, 500, 10_000)} | {slot(k.health(camera))}) == 1


def test_shard_of_is_stable_and_spreads_cameras():
    k = Keys("svl:", 8)
    assert k.shard_of("demo") == Keys("other:", 8).shard_of("demo")  # crc32: same in every process
    counts = [0] * 8
    for i in range(800):
        counts[k.shard_of(f"cam-{i}")] += 1
    assert min(counts) > 60  # roughly even (100 each)

@pytest.mark.parametrize("shards,nodes", [(8, 3), (16, 3), (6, 6), (3, 3)])
def test_shards_spread_evenly_over_the_even_slot_ranges_of_cluster_nodes(shards, nodes):
    # given a Cluster whose nodes hold contiguous, even slot ranges (what `redis-cli --cluster create` makes)
    k = Keys("svl:", shards)
    per_node = [0] * nodes
    for s in k.all_shards():
        per_node[slot(k.windows(s)) * nodes // 16384] += 1
    # then every node carries floor or ceil of shards / nodes shards
    assert max(per_node) - min(per_node) <= 1, per_node


def test_one_shard_is_the_same_code_path():
    k = Keys("p:", 1)
    assert k.shard_of("anything") == 0 and list(k.all_shards()) == [0]


@pytest.mark.parametrize("shards", [0, 1025])
def test_shard_count_is_bounded(shards):
    with pytest.raises(ValueError, match="shards"):
        Keys("p:", shards)


def test_check_layout_records_then_refuses_a_different_shard_count(redis_client):
    check_layout(redis_client, Keys("lay:", 8))
    check_layout(redis_client, Keys("lay:", 8))  # the same layout: fine
    with pytest.raises(LayoutMismatch, match="8 shards.*configured for version 2 with 4 shards"):
        check_layout(redis_client, Keys("lay:", 4))
    check_layout(redis_client, Keys("other:", 4))  # another prefix is another deployment
