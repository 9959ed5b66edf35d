"""The etcd store: the only package that talks to etcd.

* ``_ops``: what goes over the wire as plain values (keys, ops, compares, results) and the errors;
* ``_etcd``: the Trio client over the synchronous ``etcd3`` API (calls run in worker threads), with its
  ``_endpoints`` (URLs, :class:`EtcdTls`), ``_watch`` (watches into Trio) and ``_lease`` (hedged keepalives);
* ``_member``: the embedded etcd member, supervised as a child process;
* ``_election``: campaign, proclaim, resign, observe; the leader key's create revision is the fencing token;
* ``_writer``: the :class:`FencedWriter` every write goes through, cutting commits to the etcd's limits;
* ``_store``: key layout (:class:`Keys`) and the :class:`Mirror`, a watched in-memory copy of the cluster's keys;
* ``_term``: what a leader service sees of one term (:class:`TermContext`) and the interfaces built on it.
"""
