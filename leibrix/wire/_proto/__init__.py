"""Generated wire code (do not edit; run ``make proto``).

* ``leibrix.wire._proto.leibrix_cp``: betterproto messages, grpclib stubs and service
  bases for the gRPC surface.
* ``leibrix.wire._proto.records``: upb-backed ``*_pb2`` messages for etcd values.
"""
