"""Leibrix Master: the control plane of a memory-centric analytics acceleration layer.

The public surface is deliberately small:

* ``leibrix.placement``: the placement engine (hashing, consistent-hash ring,
  round-robin, capacity-aware packing, benefit ranking) over the Cython core;
* the ``leibrix`` command (``leibrix.cli``): the master, the reference worker and
  the operator commands.

The service itself lives in layered packages whose names show the architecture,
each importing only the ones below it (``lint-imports`` checks it)::

    cli -> master -> api -> control -> workers -> state -> store -> domain -> wire

with the reference worker (``leibrix.worker``) and the client (``leibrix.client``)
beside them, speaking only the wire. Modules inside them are private
(``_name``) and may change without notice.
"""

__version__ = "0.1.0"
