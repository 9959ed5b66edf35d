"""Leibrix Master: the control plane of a memory-centric analytics acceleration layer.

The public surface is deliberately small:

* ``leibrix.placement``: the placement engine (hashing, consistent-hash ring,
  round-robin, capacity-aware packing, benefit ranking) over the Cython core;
* the ``leibrix`` command (``leibrix.cli``): the master, the reference worker and
  the operator commands.

Every other module is private (``leibrix._name``) and may change without notice.
"""

__version__ = "0.1.0"
