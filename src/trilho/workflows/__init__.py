"""The conductors: ``trilho run``, ``compare``, ``tune`` and ``monitor``, each on the one context
every conductor stands on. Conductors never call each other."""
