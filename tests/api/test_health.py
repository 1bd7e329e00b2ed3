"""``GET /healthz`` over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.migrate import upgrade
from tests.api.helpers import make_api, serve
from tests.conftest import Unmigrated, make_resources


def test_healthz_names_a_database_behind_the_newest_schema_until_it_is_upgraded(
    unmigrated: Unmigrated, graph_dir: Path, dagster_instance: DagsterInstance,
) -> None:
    app, executor = make_api(get_database(unmigrated.url),
                             make_resources(unmigrated.url, graph_dir), dagster_instance)
    with serve(app) as url:
        before = httpx.get(f"{url}/healthz", timeout=30)
        upgrade(unmigrated.url)
        after = httpx.get(f"{url}/healthz", timeout=30)
    executor.close()

    assert before.status_code == 503
    detail = before.json()["database"]["detail"]
    assert detail == (f"database not migrated: at revision {unmigrated.at}, needs "
                      f"{unmigrated.needs}; run `provisioning-pipelines db upgrade`")
    where = make_url(unmigrated.url)
    assert not {where.host, str(where.port), where.database} & set(detail.split())
    assert (after.status_code, after.json()["database"]) == (200, {"ok": True})
