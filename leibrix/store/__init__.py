"""The etcd store: the only package that talks to etcd.

* ``_etcd``: the Trio client over the synchronous ``etcd3`` API (calls run in worker threads);
* ``_member``: the embedded etcd member, supervised as a child process;
* ``_election``: campaign, proclaim, resign, observe; the leader key's create revision is the fencing token;
* ``_store``: key layout (:class:`Keys`), the :class:`FencedWriter` every write goes through, and the
  :class:`Mirror`, a watched in-memory copy of the cluster's keys;
* ``_term``: what a leader service sees of one term (:class:`TermContext`) and the interfaces built on it.
"""
