"""Cluster state: the object model and the replicated store the managers share.

* ``objects``   Cluster, Node, Service, Task, Secret, Network and their specs (SwarmKit's model, Docker's
                spellings); ``to_dict``/``from_dict``, compact ``to_list``/``from_list``, deep ``copy``.
* ``validate``  name/spec checks returning Docker's error texts.
* ``store``     ``Store``: tables + indexes, ``apply(index, data)`` for committed Raft entries,
                ``snapshot``/``restore``, reads (``get``/``list``/``find``/``tasks_by_*``), watches.
* ``tx``        ``Tx``: ``with store.batch() as tx`` builds a ``Changeset`` (``changeset``) to propose.
* ``watch``     ``Event`` and the bounded ``WatchQueue``.
* ``errors``    ``SequenceConflict``, ``NameConflict``, ``NotFound``… (SwarmKit's messages).

Rule of the house: objects read from the store are shared; copy before modifying (see ``store``).
"""
