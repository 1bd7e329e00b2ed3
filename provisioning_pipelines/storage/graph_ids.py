"""What a graph's id looks like, wherever it is read: the services, and a graph host's edge,
which turns an id into a file name and so must refuse anything else (``../``, a path, NUL)."""

from __future__ import annotations

import re

#: A graph's id: ``kg`` and at least 16 hex digits (a hash of its subscription).
GRAPH_ID = re.compile(r"kg[0-9a-f]{16,}")
#: A graph's or a subgraph's id (``{parent}_{name}``), as it may appear in a path.
ANY_GRAPH_ID = re.compile(r"kg[0-9a-f]{16,64}(_[A-Za-z0-9]{1,20})?")
