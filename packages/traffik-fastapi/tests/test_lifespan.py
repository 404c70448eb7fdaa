"""A backend given to an app outside `FastAPI(lifespan=backend.lifespan)` (docs/concepts/backends.md)."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from traffik import HTTPThrottle, InMemoryBackend


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # (FastAPI deprecates on_event)
def test_a_startup_handler_that_calls_backend_app_gives_the_app_its_backend() -> None:
    # traffik 1.2's pattern (spec/integration.md §7): `backend(app)` stores the backend as the
    # app's when called, without entering; a throttle given no backend then finds it.
    store = InMemoryBackend(namespace="on-event")
    api = HTTPThrottle("on-event:api", rate="1/min")
    app = FastAPI()

    @app.on_event("startup")
    async def startup() -> None:
        await store.initialize()
        store(app)

    @app.get("/", dependencies=[Depends(api)])
    async def root() -> str:
        return "ok"

    with TestClient(app) as client:
        assert [client.get("/").status_code for _ in range(2)] == [200, 429]
