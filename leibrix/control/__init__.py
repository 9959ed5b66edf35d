"""The leader's control loop: admission, residency, placement and the epoch lifecycle, for one term.

* ``_admission``: the admission queue and batcher, and :class:`AdmissionService`, the leader service
  that owns the state model and starts everything below each term;
* ``_coordinator``: scheduling passes, LoadPlans, worker events, moves and retirement;
* ``_heat_checkpoint``, ``_janitor``: heat checkpoints and pruning of expired records;
* ``_drain``: draining a worker make-before-break.
"""
