"""The assets the flows materialize: one constant per key, for every flow and the code location.

A key is a Dagster asset key's path; the UI groups each resource's history under it, whichever
path (a run or the direct executor) made it.
"""

GRAPH_ASSET = ("provisioning", "graph")
SUBGRAPH_ASSET = ("provisioning", "subgraph")
REPOSITORY_ASSET = ("provisioning", "repository_access")
BACKUP_ASSET = ("provisioning", "graph_backup")

#: The asset of each kind of subscription's resource.
SUBSCRIPTION_ASSETS = {"graph": GRAPH_ASSET, "repository": REPOSITORY_ASSET}
