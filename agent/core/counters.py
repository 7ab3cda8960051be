"""Counters of cellard's background work, exported by the metrics listener (:mod:`agent.core.metrics`).

One process-wide registry, :data:`REGISTRY`: the reporter, the worker saver, the queue and the
Scaleout combiner count here whether or not ``[metrics] listen`` is set (an increment is a lock and
an add), and the listener, when on, serves this registry beside the per-cell families. Labels stay
bounded: ``saver`` is one of ``[reporter] savers`` (configuration), ``status`` one of a fixed set;
queue counters are totals (queue names are chosen by workloads: unbounded).

Names (the README's metrics table lists them with the rest):

* ``cellar_reporter_reports_sent_total{saver}``: reports a saver ACCEPTED;
  ``cellar_reporter_failures_total{saver}``: sends that failed (an RPC error or NOT_ACCEPTED);
  ``cellar_reporter_last_success_timestamp_seconds{saver}``: when a saver last accepted one.
* ``cellar_saver_reports_received_total``, ``cellar_saver_reports_stored_total``,
  ``cellar_saver_reports_rejected_total`` (NOT_ACCEPTED: malformed), ``cellar_saver_errors_total``
  (the database failed).
* ``cellar_queue_messages_sent_total``, ``..._received_total`` (handed to a receiver, redeliveries
  included), ``..._acknowledged_total`` (MarkDone).
* ``cellar_scaleout_tasks_queued_total``, ``cellar_scaleout_tasks_finished_total{status}``,
  ``cellar_scaleout_polls_total`` (PollAndReport calls: clients alive).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

REPORTER_SENT = Counter("cellar_reporter_reports_sent", "reports a worker saver accepted", ["saver"],
                        registry=REGISTRY)
REPORTER_FAILURES = Counter("cellar_reporter_failures", "reports that failed: an RPC error or NOT_ACCEPTED",
                            ["saver"], registry=REGISTRY)
REPORTER_LAST_SUCCESS = Gauge("cellar_reporter_last_success_timestamp_seconds",
                              "Unix time a worker saver last accepted a report", ["saver"], registry=REGISTRY)

SAVER_RECEIVED = Counter("cellar_saver_reports_received", "SaveMachine calls received", registry=REGISTRY)
SAVER_STORED = Counter("cellar_saver_reports_stored", "reports stored in the database", registry=REGISTRY)
SAVER_REJECTED = Counter("cellar_saver_reports_rejected", "reports answered NOT_ACCEPTED (malformed)",
                         registry=REGISTRY)
SAVER_ERRORS = Counter("cellar_saver_errors", "reports the database failed to store", registry=REGISTRY)

QUEUE_SENT = Counter("cellar_queue_messages_sent", "messages stored by queue Send (all queues)", registry=REGISTRY)
QUEUE_RECEIVED = Counter("cellar_queue_messages_received",
                         "messages handed out by queue Receive, redeliveries included (all queues)", registry=REGISTRY)
QUEUE_ACKNOWLEDGED = Counter("cellar_queue_messages_acknowledged", "messages marked done (all queues)",
                             registry=REGISTRY)

SCALEOUT_QUEUED = Counter("cellar_scaleout_tasks_queued", "tasks queued for combiner clients", registry=REGISTRY)
SCALEOUT_FINISHED = Counter("cellar_scaleout_tasks_finished", "tasks that ended, by final status", ["status"],
                            registry=REGISTRY)
SCALEOUT_POLLS = Counter("cellar_scaleout_polls", "PollAndReport calls from combiner clients", registry=REGISTRY)
