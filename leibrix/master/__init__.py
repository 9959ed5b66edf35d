"""The master process: configuration, the composition root, and the task tree.

* ``_config``: every option once (flags, environment, TOML, defaults);
* ``_compose``: the composition root, where every part is built and wired;
* ``_master``: the Trio task tree (etcd member, servers, mirror, election, leader terms) and shutdown.
"""
