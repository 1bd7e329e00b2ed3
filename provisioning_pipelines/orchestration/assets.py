"""The assets provisioning materializes, declared once for the jobs and the direct path.

They are external assets (``AssetSpec``): Dagster does not compute them, the flows report them.
A Dagster run logs an ``AssetMaterialization`` from its last op; the direct executor reports one
with ``report_runless_asset_event``. One history per asset, told apart by the
``provisioning_method`` metadata (``dagster`` or ``direct``).
"""

from dagster import AssetKey, AssetSpec

from provisioning_pipelines.flows import asset_keys

GRAPH_ASSET = AssetSpec(
    key=AssetKey(list(asset_keys.GRAPH_ASSET)),
    description="Customer graph databases (LadybugDB): a materialization each time one is "
    "provisioned, suspended, reactivated, deleted or restored.",
    group_name="provisioning",
    kinds={"ladybug"},
)
SUBGRAPH_ASSET = AssetSpec(
    key=AssetKey(list(asset_keys.SUBGRAPH_ASSET)),
    description="Subgraphs: child databases of a graph on the parent's host.",
    group_name="provisioning",
    kinds={"ladybug"},
)
REPOSITORY_ACCESS_ASSET = AssetSpec(
    key=AssetKey(list(asset_keys.REPOSITORY_ASSET)),
    description="Access grants to shared data repositories, with the plan's credits.",
    group_name="provisioning",
    kinds={"sql"},
)
GRAPH_BACKUP_ASSET = AssetSpec(
    key=AssetKey(list(asset_keys.BACKUP_ASSET)),
    description="Backups of graphs: consistent copies of their database files, with manifests "
    "(daily, on demand, and the final one before a deletion).",
    group_name="provisioning",
    kinds={"ladybug"},
)
ASSETS = [GRAPH_ASSET, SUBGRAPH_ASSET, REPOSITORY_ACCESS_ASSET, GRAPH_BACKUP_ASSET]
