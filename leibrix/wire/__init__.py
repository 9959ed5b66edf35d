"""The wire: the gRPC contract as generated code, and the facts about it that the ``.proto`` files do not hold.

The bottom layer; it imports nothing else of Leibrix.

* ``_proto``: generated from ``proto/leibrix_cp/*.proto`` by ``make proto``
  (betterproto messages, stubs and service bases in ``leibrix_cp``; upb
  ``*_pb2`` messages for etcd values in ``records``);
* ``_grpc``: the worker-stream paths, the ``leibrix-leader`` metadata key and
  the one asyncio-to-Trio crossing (:func:`call_trio`);
* ``_address``: ``host:port`` parsing.
"""
