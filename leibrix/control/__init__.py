"""The leader's control loop: admission, residency, placement and the epoch lifecycle, for one term.

* ``_service``: :class:`AdmissionService`, the leader service that owns the
  state model and routes and starts everything below each term;
* ``_admission``: the admission queue and batcher (in-flight retries, overload
  shedding); ``_decide``: deciding one admission; ``_batch``: their units;
* ``_coordinator``: the epoch coordinator, composed over ``_ledger`` (indices,
  heat and benefit, fenced writes, commands) from ``_scheduling`` (passes and
  placement), ``_worker_events`` (status, registration, dead workers, moves),
  ``_retirement`` and ``_loadplan``;
* ``_heat_checkpoint``, ``_janitor``: heat checkpoints and pruning of expired records;
* ``_drain``: draining a worker make-before-break.
"""
