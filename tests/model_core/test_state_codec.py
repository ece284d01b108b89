"""Tracker state serialisation: exact round trips, deltas, and clear errors on bad bytes."""

import struct
import zlib

import pytest
import torch

from model_core import state_codec
from model_core.state_codec import (
    StateFormatError,
    UnsupportedStateVersion,
    check_version,
    delta_parts,
    state_from_bytes,
    state_from_parts,
    state_parts,
    state_to_bytes,
    unpack,
)
from model_core.video_tracker import VideoTracker
from tests.model_core.video_fixtures import tracking_model
from tests.fixtures import synthetic_clip

H, W = 96, 160


@pytest.fixture(scope="module")
def tracker():
    return VideoTracker(tracking_model())


@pytest.fixture(scope="module")
def frames():
    return synthetic_clip(16, H, W, seed=4)


def _started(tracker, frames, n=10):
    state = tracker.new_state(H, W)
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    tracker.add_prompt(state, 2, box=[90, 10, 130, 50])
    for f in frames[:n]:
        tracker.track(state, f)
    tracker.add_prompt(state, 3, points=[[100, 60]], labels=[1])  # pending prompt travels too
    return state


def test_round_trip_then_continue_bit_for_bit(tracker, frames):
    state = _started(tracker, frames)
    restored, extra = state_from_bytes(state_to_bytes(state, extra={"model": "sam2.1_t"}))
    assert extra == {"model": "sam2.1_t"}
    assert state_to_bytes(restored, extra={"model": "sam2.1_t"}) == state_to_bytes(state, extra={"model": "sam2.1_t"})
    for f in frames[10:]:
        a, b = tracker.track(state, f), tracker.track(restored, f)
        assert [o.obj_id for o in a.objects] == [o.obj_id for o in b.objects] == [1, 2, 3]
        for x, y in zip(a.objects, b.objects):
            assert torch.equal(x.logits, y.logits)


def test_bf16_memory_stays_bf16(frames):
    tracker = VideoTracker(tracking_model(), dtype=torch.bfloat16)
    state = _started(tracker, frames, n=3)
    assert state.objects[1].non_cond[2].maskmem.dtype == torch.bfloat16
    restored, _ = state_from_bytes(state_to_bytes(state))
    assert torch.equal(restored.objects[1].non_cond[2].maskmem, state.objects[1].non_cond[2].maskmem)


def test_deltas_applied_to_a_store_rebuild_the_state(tracker, frames):
    state = tracker.new_state(H, W)
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    header, store = state_parts(state)
    for f in frames:
        tracker.track(state, f)
        header, puts, deletes = delta_parts(state)
        assert {k.rpartition("/")[0] for k in puts} == {f"1:{'c' if state.frame_idx == 1 else 'n'}:{state.frame_idx - 1}"}
        store.update(puts)  # only this frame's new entry is written; evictions are deletions
        for key in deletes:
            del store[key]
    rebuilt, _ = state_from_parts(header, store)
    assert state_to_bytes(rebuilt) == state_to_bytes(state)
    entries = {**state.objects[1].cond, **state.objects[1].non_cond}
    assert len(store) == sum(getattr(e, f) is not None for e in entries.values()
                             for f in ("maskmem", "obj_ptr", "score", "low_res"))


def test_bad_bytes_raise_clear_errors(tracker, frames):
    blob = state_to_bytes(_started(tracker, frames, n=2))
    with pytest.raises(StateFormatError, match="checksum"):
        state_from_bytes(blob[: len(blob) // 2])
    corrupted = bytearray(blob)
    corrupted[len(blob) // 2] ^= 0xFF
    with pytest.raises(StateFormatError, match="checksum"):
        state_from_bytes(bytes(corrupted))
    with pytest.raises(StateFormatError, match="magic"):
        state_from_bytes(b"PK\x03\x04" + blob[4:])
    future = blob.replace(b'"version":1', b'"version":9')
    future = future[:-4] + struct.pack("<I", zlib.crc32(future[:-4]))
    with pytest.raises(StateFormatError, match="version 9"):
        state_from_bytes(future)


# ---- format versions: images mode (each image its own size) is version 2, a video stays version 1 ----------


@pytest.fixture(scope="module")
def images_state(tracker):
    """Images of two sizes in one session, and a prompt waiting, in pixels, for an image of unknown size."""
    state = tracker.new_state(0, 0, mode="images")
    tracker.add_prompt(state, 1, box=[20, 20, 70, 80])
    tracker.track(state, synthetic_clip(1, 120, 80, seed=7)[0])
    tracker.track(state, synthetic_clip(1, 60, 100, seed=8)[0])
    tracker.add_prompt(state, 2, points=[[40, 50]], labels=[1])
    return state


@pytest.fixture(scope="module")
def video_state(tracker, frames):
    return _started(tracker, frames, n=2)


def _version(blob: bytes) -> int:
    return unpack(blob)[0]["version"]


def test_an_images_session_round_trips_as_version_2(images_state):
    blob = state_to_bytes(images_state)
    assert _version(blob) == 2
    restored, _ = state_from_bytes(blob)
    assert (restored.mode, restored.height, restored.width) == ("images", 60, 100) and restored.pending[2].pixels
    assert state_to_bytes(restored) == blob


def test_a_video_session_is_still_version_1(video_state):
    assert _version(state_to_bytes(video_state)) == 1
    assert _version(state_parts(video_state)[0]) == 1


def test_an_images_sessions_header_part_is_version_2_and_its_parts_join_again(tracker, images_state):
    state, _ = state_from_bytes(state_to_bytes(images_state))  # a copy: the next image changes it
    header, parts = state_parts(state)
    assert _version(header) == 2 and {_version(p) for p in parts.values()} == {1}  # field parts: tensors only
    assert state_to_bytes(state_from_parts(header, parts)[0]) == state_to_bytes(state)
    tracker.track(state, synthetic_clip(1, 90, 90, seed=9)[0])
    assert _version(delta_parts(state)[0]) == 2


def test_a_version_1_reader_refuses_an_images_session_and_reads_a_video(video_state, images_state, monkeypatch):
    video, images = state_to_bytes(video_state), state_to_bytes(images_state)
    monkeypatch.setattr(state_codec, "READ_VERSIONS", (1,))  # a replica from before version 2
    assert state_from_bytes(video)[0].mode == "video"
    with pytest.raises(StateFormatError, match=r"version 2 is not supported \(this reads versions 1\)"):
        state_from_bytes(images)


def test_an_unknown_version_is_refused_clearly(images_state):
    blob = state_to_bytes(images_state)
    future = blob.replace(b'"version":2', b'"version":3')
    future = future[:-4] + struct.pack("<I", zlib.crc32(future[:-4]))
    with pytest.raises(StateFormatError, match=r"version 3 is not supported \(this reads versions 1, 2\)"):
        state_from_bytes(future)


def test_the_version_is_checked_from_the_header_alone(images_state):
    blob = state_to_bytes(images_state)
    assert check_version(blob) == 2
    future = blob.replace(b'"version":2', b'"version":3')
    future = future[:-4] + struct.pack("<I", zlib.crc32(future[:-4]))
    with pytest.raises(UnsupportedStateVersion) as exc:
        check_version(future)
    assert (exc.value.version, exc.value.readable) == (3, (1, 2))
    with pytest.raises(StateFormatError, match="checksum") as exc:  # corruption is not a version question
        check_version(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    assert not isinstance(exc.value, UnsupportedStateVersion)
