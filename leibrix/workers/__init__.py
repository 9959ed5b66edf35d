"""Worker streams: where a ``CoordinateWorker`` stream from a worker ends.

* ``_hub``: :class:`WorkerHub`, the parts below put together (what the rest of the master uses);
* ``_stream``: the asyncio side, one session per gRPC stream (framing, registration, reader, sender);
* ``_membership``: the Trio side, members and liveness during a leadership term, dead workers re-placed;
* ``_records``: membership transitions group-committed to etcd; ``_rebalance``: join rebalancing;
* ``_member``: a worker as the leader knows it, and the checks a registration passes;
* ``_messages``: frames, ``common_ack`` commands, client strings quoted clipped; ``_config``: the knobs;
* ``_protocols``: the seams, each one Protocol: the control loop's ``EpochCoordinator`` and
  ``WorkerDirectory``, and between the two sides here ``Registry`` and ``Session``.

The package reports worker events to the term's epoch coordinator through the
``EpochCoordinator`` protocol and never imports the control loop.
"""
