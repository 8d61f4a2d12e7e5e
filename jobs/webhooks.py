"""Webhook alerts of the stream job (`--alert-webhook URL`, repeatable): one signed JSON POST per event state.

Per micro-batch, after the alerts topic (jobs/sinks.py), for every target and every event of the batch whose
(event id, state) that target has not had yet:

  POST <url>   Content-Type: application/json
               X-Avwatch-Event-Id: <event id>      X-Avwatch-Event-State: open | ongoing | closed
               X-Avwatch-Delivery: <event id>:<state>   (idempotency key: the same for every retry)
               X-Avwatch-Signature: sha256=<hex HMAC-SHA256 of the raw body with --alert-webhook-secret>
  body         {"kind": "avwatch.event", "delivery": ..., "state": ..., "status": "firing" | "resolved",
                "summary": one line, "event": the alerts-topic message (every event field but the image)}
               or, with --alert-webhook-format slack, {"text": summary} (a Slack incoming webhook)

A 2xx answer is delivered; a connection failure, a timeout, 408, 425, 429 and 5xx are retried with backoff
(0.5 s doubling to 15 s, Retry-After honoured) for up to the batch's budget (--alert-retry-s); any other
4xx is the receiver's final "no" (Alertmanager does the same): logged, counted, not retried.

Once per (target, event id, state), across restarts and replays: each batch's deliveries are recorded in
the Delta table <sink>/_webhooks_sent (one row per delivery: target hash, event id, state), together with
the app transaction (<app id>-webhooks, batch id) in the same commit, so a replayed batch sends nothing and
an event state already delivered in an earlier batch, by this job or an earlier checkpoint, is not sent
again. A batch whose budget runs out records what was delivered, then fails (the query stops; its replay
sends the rest). The narrow window: a driver killed between a receiver's 2xx and the record's commit sends
those deliveries once more (same X-Avwatch-Delivery: receivers can drop the repeat).

Pure HTTP with the standard library (urllib): no Spark, no Kafka here.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import pyarrow as pa

from avwatch.errors import AvwatchError
from detectors.events import event_state

log = logging.getLogger("avwatch.webhooks")

SIGNATURE_HEADER = "X-Avwatch-Signature"
DELIVERY_HEADER = "X-Avwatch-Delivery"
WEBHOOKS_SENT = "_webhooks_sent"
LEDGER_SCHEMA = pa.schema([("target", pa.string()), ("event_id", pa.string()), ("state", pa.string()),
                           ("batch_id", pa.int64()), ("outcome", pa.string()),
                           ("at", pa.timestamp("us", tz="UTC"))])
FORMATS = ("json", "slack")
STATES = ("open", "ongoing", "closed")
RETRIED_STATUS = {408, 425, 429}


class WebhooksNotDelivered(AvwatchError):
    """A batch's webhook deliveries did not all succeed within the retry budget: the batch fails."""


def sign(body: bytes, secret: str) -> str:
    """The X-Avwatch-Signature value: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """What a receiver does: recompute the signature over the raw body and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(body, secret), header.strip())


def target_id(url: str) -> str:
    """A stable id of a target that does not reveal its URL (Slack's URLs are credentials)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def summary(alert: dict, state: str) -> str:
    """One line a person reads on a phone: what, where, when, how bad."""
    mark = {"open": "OPEN", "ongoing": "ONGOING", "closed": "ended"}[state]
    span = f"{alert.get('start_s', 0):.2f} s" + (f"-{alert['end_s']:.2f} s" if state == "closed" and
                                                   alert.get("end_s") is not None else " (still on)")
    return (f"[avwatch] {mark}: {alert.get('detector')} on {alert.get('stream_id')}, {alert.get('severity')}, "
            f"media {span}, score {alert.get('score') or 0:.3g} (threshold {alert.get('threshold') or 0:.3g}) "
            f"event {alert.get('event_id')}")


def payload(alert: dict, state: str, fmt: str = "json") -> bytes:
    """The request body for one event state (see the module docstring); deterministic, so every retry of a
    delivery carries the same bytes and signature."""
    text = summary(alert, state)
    if fmt == "slack":
        body = {"text": text}
    else:
        body = {"kind": "avwatch.event", "delivery": f"{alert['event_id']}:{state}", "state": state,
                "status": "resolved" if state == "closed" else "firing", "summary": text, "event": alert}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")


@dataclass(frozen=True)
class WebhookTarget:
    url: str                   # http(s) URL the POSTs go to
    secret: str | None = None  # HMAC-SHA256 key of X-Avwatch-Signature; None: no signature header
    format: str = "json"       # json (avwatch's payload) | slack ({"text": ...})
    timeout_s: float = 10.0    # per request

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise AvwatchError(f"--alert-webhook must be an http:// or https:// URL, not {self.url!r}")
        if self.format not in FORMATS:
            raise AvwatchError(f"--alert-webhook-format must be one of {', '.join(FORMATS)}, not {self.format!r}")

    @property
    def id(self) -> str:
        return target_id(self.url)


class Rejected(Exception):
    """The receiver answered with a final 4xx: not retried."""


class RetryLater(Exception):
    """Not delivered this time (connection, timeout, 408/425/429/5xx); retry_after_s when the receiver said."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def post(target: WebhookTarget, alert: dict, state: str) -> int:
    """One POST; returns the 2xx status, raises Rejected or RetryLater."""
    body = payload(alert, state, target.format)
    headers = {"Content-Type": "application/json", "User-Agent": "avwatch-webhook/1",
               "X-Avwatch-Event-Id": str(alert["event_id"]), "X-Avwatch-Event-State": state,
               DELIVERY_HEADER: f"{alert['event_id']}:{state}"}
    if target.secret:
        headers[SIGNATURE_HEADER] = sign(body, target.secret)
    request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=target.timeout_s) as response:  # noqa: S310 - http(s) only
            response.read(1 << 16)
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read(1 << 16)
        if exc.code in RETRIED_STATUS or exc.code >= 500:
            raise RetryLater(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from None
        raise Rejected(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RetryLater(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


class WebhookLedger:
    """<sink>/_webhooks_sent: which (target, event id, state) were delivered, and up to which batch."""

    def __init__(self, sink: str, app_id: str):
        self.path = f"{str(sink).rstrip('/')}/{WEBHOOKS_SENT}"
        self.txn = app_id + "-webhooks"
        self._sent: set[tuple[str, str, str]] | None = None

    def _table(self):
        from deltalake import DeltaTable

        if "://" not in self.path:
            from pathlib import Path

            Path(self.path).mkdir(parents=True, exist_ok=True)
        DeltaTable.create(self.path, schema=LEDGER_SCHEMA, mode="ignore")
        return DeltaTable(self.path)

    def batch_done(self, batch_id: int) -> bool:
        done = self._table().transaction_version(self.txn)
        return done is not None and done >= batch_id

    def sent(self) -> set[tuple[str, str, str]]:
        if self._sent is None:
            rows = self._table().to_pyarrow_table(columns=["target", "event_id", "state"]).to_pylist()
            self._sent = {(r["target"], r["event_id"], r["state"]) for r in rows}
        return self._sent

    def record(self, rows: list[dict], batch_id: int | None) -> None:
        """Append the deliveries (and, when the batch is complete, its app transaction) in one commit."""
        from datetime import datetime, timezone

        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        if not rows and batch_id is None:
            return
        now = datetime.now(timezone.utc)
        table = pa.Table.from_pylist([{**r, "at": now} for r in rows], schema=LEDGER_SCHEMA)
        props = CommitProperties(app_transactions=[Transaction(self.txn, batch_id)]) if batch_id is not None else None
        for attempt in range(1, 6):
            try:
                write_deltalake(self._table(), table, mode="append", commit_properties=props)
                break
            except CommitFailedError:  # another job's record won the race: appends are independent, retry
                if attempt == 5:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        self.sent().update((r["target"], r["event_id"], r["state"]) for r in rows)


class WebhookSender:
    """Delivers each batch's event states to every target once (see the module docstring)."""

    def __init__(self, targets: list[WebhookTarget], sink: str, app_id: str, retry_s: float = 300.0,
                 on_delivery=None):
        self.targets = list(targets)
        self.ledger = WebhookLedger(sink, app_id)
        self.retry_s = float(retry_s)
        self.on_delivery = on_delivery  # callable(outcome: "delivered" | "rejected" | "retried", format)
        self.totals = {"delivered": 0, "rejected": 0, "retried": 0}

    def _count(self, outcome: str, target: WebhookTarget) -> None:
        self.totals[outcome] += 1
        if self.on_delivery is not None:
            self.on_delivery(outcome, target.format)

    def deliver(self, alerts: list[dict], batch_id: int) -> int:
        """POST every (target, event state) of the batch not delivered before; returns how many were
        delivered now. Raises WebhooksNotDelivered when the budget runs out (what was delivered is
        recorded first)."""
        if not self.targets or not alerts:
            return 0
        if self.ledger.batch_done(batch_id):
            log.info("webhooks of batch %d were sent before (a replayed batch): not sent again", batch_id)
            return 0
        sent = self.ledger.sent()
        pending, seen = [], set()
        for target in self.targets:
            for alert in alerts:
                key = (target.id, str(alert["event_id"]), event_state(alert))
                if key not in sent and key not in seen:
                    seen.add(key)
                    pending.append((target, alert, key[2]))
        done: list[dict] = []
        deadline = time.monotonic() + self.retry_s
        delay, attempt, last = 0.5, 0, None
        while pending:
            attempt += 1
            failed, wait_hint = [], 0.0
            for target, alert, state in pending:
                if any(t is target for t, _, _ in failed):
                    failed.append((target, alert, state))  # this receiver is down: keep its order, retry later
                    continue
                try:
                    post(target, alert, state)
                    outcome = "delivered"
                except Rejected as exc:
                    log.error("webhook %s refused %s (%s): not retried; check the URL and the receiver",
                              target.id, f"{alert['event_id']}:{state}", exc)
                    outcome = "rejected"
                except RetryLater as exc:
                    failed.append((target, alert, state))
                    last = exc
                    wait_hint = max(wait_hint, exc.retry_after_s or 0.0)
                    self._count("retried", target)
                    continue
                self._count(outcome, target)
                done.append({"target": target.id, "event_id": str(alert["event_id"]), "state": state,
                             "batch_id": batch_id, "outcome": outcome})
            pending = failed
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self.ledger.record(done, None)  # what went through is never sent again
                raise WebhooksNotDelivered(
                    f"{len(pending)} webhook delivery(ies) of batch {batch_id} failed after {attempt} attempt(s) "
                    f"in {self.retry_s:g} s (--alert-retry-s): {last}. The events are in anomaly_events and on "
                    f"the alerts topic; the batch fails and a restart of the job replays it and sends the rest")
            wait = min(max(delay, wait_hint), left)
            log.warning("webhooks of batch %d: %d not delivered (%s); retrying in %.1f s (%.0f s of "
                        "--alert-retry-s left)", batch_id, len(pending), last, wait, left)
            time.sleep(wait)
            delay = min(delay * 2, 15.0)
        self.ledger.record(done, batch_id)
        return sum(1 for d in done if d["outcome"] == "delivered")


def targets_from_args(urls: list[str] | None, secret: str | None, fmt: str = "json") -> list[WebhookTarget]:
    return [WebhookTarget(url, secret=secret or None, format=fmt) for url in (urls or [])]
