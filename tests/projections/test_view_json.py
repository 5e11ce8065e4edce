"""ViewEncoder's cached text is byte for byte the reference json.dumps(to_dict(view))."""

from __future__ import annotations

import dataclasses
import importlib.util
from datetime import timedelta
from pathlib import Path

from jetgrid.coordinator.settings import Settings
from jetgrid.events import WORKERS
from jetgrid.projections.fold import Fold, fold_config
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows
from jetgrid.projections.view_json import ViewEncoder, view_json

_spec = importlib.util.spec_from_file_location(
    "digest_pin", Path(__file__).with_name("test_digest_pin.py")
)
assert _spec is not None and _spec.loader is not None
_pin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pin)


def test_every_view_of_an_evolving_log_encodes_like_the_reference() -> None:
    settings = Settings(subject_prefix="vj", stream_prefix="VJ_")
    fold = Fold(settings.subjects, fold_config(settings))
    enc = ViewEncoder()
    checked = 0
    for it in _pin._log(settings):
        if it.stream != WORKERS:
            continue
        fold.worker_message(it.seq, it.subject, it.data, it.time)
        for wid in sorted(fold.dirty_workers):  # what the store would write after this message
            view = fold.workers[wid]
            assert enc.encode(view) == view_json(view)
            checked += 1
        fold.take_changes()
    assert checked > 700


def test_odd_values_and_changed_parts_encode_like_the_reference() -> None:
    settings = Settings(subject_prefix="vj", stream_prefix="VJ_")
    fold = Fold(settings.subjects, fold_config(settings))
    for it in _pin._log(settings)[:200]:
        if it.stream == WORKERS:
            fold.worker_message(it.seq, it.subject, it.data, it.time)
    base = fold.workers["w1"]
    assert base.uptime is not None and base.last_ping is not None
    t = base.as_of + timedelta(seconds=1)
    variants = [
        base,
        dataclasses.replace(base, hostname='h\u00e9\U0001f600\n"q"', pools=("a", "b\\c")),
        dataclasses.replace(base, heartbeat_interval_s=1),  # int, not float: "1" not "1.0"
        dataclasses.replace(base, heartbeat_interval_s=float("inf")),
        dataclasses.replace(base, draining_at=t, drain_reason="upgrade"),
        dataclasses.replace(base, tier="full", tier_since=t, tier_history=((t, "full"),)),
        dataclasses.replace(base, first_seen=base.first_seen - timedelta(seconds=5)),
        dataclasses.replace(base, uptime=dataclasses.replace(base.uptime, origin=0.25)),
        dataclasses.replace(base, uptime=None, last_ping=None),
        dataclasses.replace(base, recent=(), seen_boot=None, seen_mask=0, reanchor=True),
        dataclasses.replace(
            base,
            last_ping=dataclasses.replace(
                base.last_ping,
                accepting=False,
                models_loaded=("m:1b",),
                models_available=("m:1b", "q"),
            ),
        ),
        base,
    ]
    enc = ViewEncoder()
    for view in variants:
        assert enc.encode(view) == view_json(view)


def test_uptime_rings_encode_like_the_reference_as_they_fill_and_roll() -> None:
    """The cached ring text follows every change of a ring: a count added to the newest bucket,
    a new bucket, the oldest dropped (a new base), and a new tracker."""
    settings = Settings(subject_prefix="vj", stream_prefix="VJ_")
    fold = Fold(settings.subjects, fold_config(settings))
    for it in _pin._log(settings)[:200]:
        if it.stream == WORKERS:
            fold.worker_message(it.seq, it.subject, it.data, it.time)
    base = fold.workers["w1"]
    windows = UptimeWindows((60.0, 600.0), tier_window_s=60.0, max_buckets=4, horizon_slots=16)
    enc = ViewEncoder()
    tracker = UptimeTracker.start(1.0, windows)
    bases = set()
    for i in range(1500):
        if i == 900:
            tracker = UptimeTracker.start(1.0, windows)  # a new tracker: every ring anew
        healthy = (i // 7) % 5 != 0 and i % 13 != 0
        tracker = tracker.ping(float(i), healthy)
        bases.update(r.base for r in tracker.rings)
        view = dataclasses.replace(base, uptime=tracker)
        assert enc.encode(view) == view_json(view)
    assert len(bases) > 40  # the rings rolled over many times
