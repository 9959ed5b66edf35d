"""The state model: the cluster as decoded from the Mirror, and the routes derived from it.

* ``_model``: :class:`ClusterState` (tenants, datasets, epochs and their replicas, usage) fed by the
  Mirror's watch on every master, and the encoding of its records;
* ``_routes``: the READY epochs and their workers, resolved and watched by clients.
"""
