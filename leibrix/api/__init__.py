"""The ManagementService and the servers: how clients reach the master.

* ``_cluster``, ``_tenants``, ``_datasets``, ``_workers``: one area object per group of RPCs, served
  together by :class:`ManagementService`;
* ``_server``: the grpclib server inside Trio, the error mapping every RPC shares, Health and Reflection;
* ``_http``: ``/healthz`` and ``/metrics``.
"""
