"""Make streams and consumers match their specs: create what is missing, update what drifted,
and refuse (ProvisioningError) what cannot be changed in place. Running it twice is a no-op.

The comparison is pure (`stream_drift`, `consumer_drift`); only `provision_streams` and
`ensure_consumer` talk to JetStream.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from jetgrid.coordinator.consumers import ConsumerSpec
from jetgrid.coordinator.errors import ProvisioningError
from jetgrid.coordinator.roles import WEBHOOK_CONSUMER
from jetgrid.coordinator.settings import Settings
from jetgrid.events import DEAD_LETTERS, StreamSpec, dead_letter_spec, stream_specs

log = logging.getLogger("jetgrid.provision")

# Fields that JetStream will not change on an existing stream.
_IMMUTABLE_STREAM_FIELDS = frozenset({"storage", "retention"})


def stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType(spec.storage),
        num_replicas=spec.replicas,
        duplicate_window=spec.duplicate_window_s,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        max_msg_size=spec.max_msg_size,
        max_msgs_per_subject=-1,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )


def _stream_view(cfg: StreamConfig) -> dict[str, Any]:
    return {
        "subjects": sorted(cfg.subjects or []),
        "description": cfg.description,
        "retention": cfg.retention,
        "storage": cfg.storage,
        "num_replicas": cfg.num_replicas or 1,
        "duplicate_window": float(cfg.duplicate_window or 0),
        "max_age": float(cfg.max_age or 0),
        "max_bytes": cfg.max_bytes if cfg.max_bytes is not None else -1,
        "max_msg_size": cfg.max_msg_size if cfg.max_msg_size is not None else -1,
        "discard": cfg.discard,
        "allow_direct": bool(cfg.allow_direct),
    }


def stream_drift(desired: StreamConfig, actual: StreamConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose actual value differs from the desired one: {field: (actual, desired)}."""
    want, have = _stream_view(desired), _stream_view(actual)
    return {k: (have[k], want[k]) for k in want if want[k] != have[k]}


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=spec.name,
        name=spec.name,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        backoff=list(spec.backoff_s) or None,
    )


def consumer_drift(spec: ConsumerSpec, actual: ConsumerConfig) -> dict[str, tuple[Any, Any]]:
    """Fields of a live consumer that differ from its spec: {field: (actual, desired)}."""
    have = {
        "filter_subject": actual.filter_subject
        or (actual.filter_subjects[0] if actual.filter_subjects else None),
        "ack_wait_s": float(actual.ack_wait or 0),
        "max_deliver": actual.max_deliver,
        "max_ack_pending": actual.max_ack_pending,
        "backoff_s": tuple(float(b) for b in actual.backoff or ()),
    }
    want = {
        "filter_subject": spec.filter_subject,
        "ack_wait_s": float(spec.ack_wait_s),
        "max_deliver": spec.max_deliver,
        "max_ack_pending": spec.max_ack_pending,
        "backoff_s": tuple(float(b) for b in spec.backoff_s),
    }
    return {k: (have[k], want[k]) for k in want if have[k] != want[k]}


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    updated: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"created stream {n}" for n in self.created]
        for name, drift in self.updated.items():
            for k, (old, new) in drift.items():
                out.append(f"updated stream {name}: {k} {old!r} -> {new!r}")
        out += [f"stream {n} is up to date" for n in self.unchanged]
        return out


async def wait_for_jetstream(js: JetStreamContext, within_s: float = 30.0) -> None:
    """Wait until JetStream answers (a fresh cluster first elects its meta leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            await js.account_info()
            return
        except Exception as exc:
            if loop.time() > deadline:
                raise ProvisioningError(
                    f"JetStream did not answer within {within_s:g} s: {exc}."
                ) from exc
            await asyncio.sleep(0.25)


async def provision_streams(
    js: JetStreamContext, specs: tuple[StreamSpec, ...] | list[StreamSpec], *, update: bool = True
) -> ProvisionReport:
    """Create missing streams, update drifted ones (or raise if `update` is False)."""
    report = ProvisionReport()
    for spec in specs:
        desired = stream_config(spec)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(desired)
            report.created.append(spec.name)
            continue
        drift = stream_drift(desired, info.config)
        if not drift:
            report.unchanged.append(spec.name)
            continue
        fixed = sorted(set(drift) & _IMMUTABLE_STREAM_FIELDS)
        if fixed:
            raise ProvisioningError(
                f"Stream {spec.name} has {', '.join(f'{k}={drift[k][0]!r}' for k in fixed)} but "
                f"jetgrid needs {', '.join(f'{k}={drift[k][1]!r}' for k in fixed)}; JetStream "
                "cannot change that in place. Move the data and recreate the stream."
            )
        if not update:
            raise ProvisioningError(f"Stream {spec.name} drifted from its spec: {drift}.")
        try:
            await js.update_stream(desired)
        except APIError as exc:
            raise ProvisioningError(f"Updating stream {spec.name} failed: {exc}.") from exc
        report.updated[spec.name] = drift
    return report


async def ensure_consumer(
    js: JetStreamContext, spec: ConsumerSpec, *, update: bool = False
) -> dict[str, tuple[Any, Any]]:
    """Create the consumer if missing. If it drifted: update it when `update`, else log the drift.

    Workers call this with update=False so that workers of different versions never fight over a
    consumer's config; provisioning (`jetgrid provision`) calls it with update=True.
    Returns the drift that was found (empty when it matched or was just created).
    """
    try:
        info = await js.consumer_info(spec.stream, spec.name)
    except NotFoundError:
        await js.add_consumer(spec.stream, consumer_config(spec))
        return {}
    drift = consumer_drift(spec, info.config)
    if drift and update:
        await js.add_consumer(spec.stream, consumer_config(spec))
    elif drift:
        log.warning(
            "consumer %s on %s differs from this process's spec: %s; run `jetgrid provision` "
            "to apply it",
            spec.name,
            spec.stream,
            drift,
        )
    return drift


async def ensure_tiers_bucket(
    js: JetStreamContext, bucket: str, *, replicas: int = 1, history: int = 5
) -> bool:
    """Create the tiers KV bucket (projector -> workers) if it is missing; True if created."""
    from nats.js.api import KeyValueConfig

    try:
        await js.key_value(bucket)
        return False
    except NotFoundError:
        pass
    try:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=history,
                replicas=replicas,
                description="jetgrid worker tiers (key: worker id), published by the projector",
            )
        )
    except APIError as exc:
        raise ProvisioningError(f"Creating KV bucket {bucket} failed: {exc}.") from exc
    return True


async def ensure_snapshot_bucket(js: JetStreamContext, bucket: str, *, replicas: int = 1) -> bool:
    """Create the object store bucket of read-model snapshots if missing; True if created."""
    from nats.js.api import ObjectStoreConfig

    try:
        await js.object_store(bucket)
        return False
    except NotFoundError:
        pass
    try:
        await js.create_object_store(
            bucket,
            config=ObjectStoreConfig(
                bucket=bucket,
                replicas=replicas,
                description="jetgrid read-model snapshots, published by the projector",
            ),
        )
    except APIError as exc:
        raise ProvisioningError(f"Creating object store {bucket} failed: {exc}.") from exc
    return True


async def ensure_files_bucket(js: JetStreamContext, settings: Settings) -> bool:
    """Create the object store of uploaded and batch output files if missing; True if created.
    Its age limit is the files retention (retention_files)."""
    from nats.js.api import ObjectStoreConfig

    bucket = settings.files_bucket
    try:
        await js.object_store(bucket)
        return False
    except NotFoundError:
        pass
    keep = settings.files_retention
    try:
        await js.create_object_store(
            bucket,
            config=ObjectStoreConfig(
                bucket=bucket,
                replicas=settings.stream_replicas,
                ttl=keep.max_age_s or None,
                max_bytes=keep.max_bytes,
                description="jetgrid files: batch inputs, outputs and errors (gateway.files)",
            ),
        )
    except APIError as exc:
        raise ProvisioningError(f"Creating object store {bucket} failed: {exc}.") from exc
    return True


async def ensure_batches_bucket(js: JetStreamContext, settings: Settings) -> bool:
    """Create the KV bucket of batch records and their lines' outcomes if missing; True if
    created. Kept as long as files (retention_files)."""
    from nats.js.api import KeyValueConfig

    bucket = settings.batches_bucket
    try:
        await js.key_value(bucket)
        return False
    except NotFoundError:
        pass
    keep = settings.files_retention
    try:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                replicas=settings.stream_replicas,
                ttl=keep.max_age_s or None,
                description="jetgrid batches (gateway.batches) and their lines' outcomes",
            )
        )
    except APIError as exc:
        raise ProvisioningError(f"Creating KV bucket {bucket} failed: {exc}.") from exc
    return True


def webhook_consumer_config(settings: Settings) -> ConsumerConfig:
    """The durable consumer every webhook service shares: the terminal events of JOB_EVENTS
    from the moment it is created, acked explicitly, redelivered after a delivery's timeout."""
    p = settings.subject_prefix
    names = ("completed", "failed", "cancelled", "dead", "rejected")
    return ConsumerConfig(
        durable_name=WEBHOOK_CONSUMER,
        description="jetgrid webhook deliveries of job outcomes (jetgrid.webhooks)",
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.webhook_timeout_s * 3 + 5,
        max_deliver=-1,  # the service counts attempts and gives up itself (webhook_attempts)
        max_ack_pending=1000,
        filter_subjects=[f for n in names for f in (f"{p}.job.*.{n}", f"{p}.job.*.{n}.*")],
    )


async def ensure_webhook_consumer(js: JetStreamContext, settings: Settings) -> bool:
    """Create the webhook services' shared consumer on JOB_EVENTS if missing; True if created."""
    stream = settings.streams.job_events
    try:
        await js.consumer_info(stream, WEBHOOK_CONSUMER)
        return False
    except NotFoundError:
        pass
    try:
        await js.add_consumer(stream, webhook_consumer_config(settings))
    except APIError as exc:
        raise ProvisioningError(
            f"Creating consumer {stream}/{WEBHOOK_CONSUMER} failed: {exc}."
        ) from exc
    return True


async def provision_batches(js: JetStreamContext, settings: Settings) -> list[str]:
    """The files object store, the batches bucket and the webhook consumer; what was created."""
    created = []
    if await ensure_files_bucket(js, settings):
        created.append(f"OBJ_{settings.files_bucket}")
    if await ensure_batches_bucket(js, settings):
        created.append(f"KV_{settings.batches_bucket}")
    if await ensure_webhook_consumer(js, settings):
        created.append(f"{settings.streams.job_events}/{WEBHOOK_CONSUMER}")
    return created


def deployment_specs(settings: Settings) -> list[StreamSpec]:
    """Every stream one deployment needs: the four of the log, and DEAD_LETTERS."""
    replicas, window = settings.stream_replicas, settings.duplicate_window_s
    retention = settings.retention
    return [
        *stream_specs(
            settings.subjects,
            settings.streams,
            replicas=replicas,
            duplicate_window_s=window,
            retention=retention,
            tokens_storage=settings.tokens_storage,
        ),
        dead_letter_spec(
            settings.streams,
            replicas=replicas,
            duplicate_window_s=window,
            retention=retention[DEAD_LETTERS],
        ),
    ]


async def provision_deployment(
    js: JetStreamContext, settings: Settings, *, update: bool = True
) -> ProvisionReport:
    """Streams (created, updated or refused as provision_streams says), the tiers bucket and
    the snapshot bucket."""
    report = await provision_streams(js, deployment_specs(settings), update=update)
    if await ensure_tiers_bucket(js, settings.tiers_bucket, replicas=settings.stream_replicas):
        report.created.append(f"KV_{settings.tiers_bucket}")
    bucket = settings.snapshot_bucket
    if await ensure_snapshot_bucket(js, bucket, replicas=settings.stream_replicas):
        report.created.append(f"OBJ_{bucket}")
    report.created.extend(await provision_batches(js, settings))
    return report
