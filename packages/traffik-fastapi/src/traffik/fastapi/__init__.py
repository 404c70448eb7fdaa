"""Traffik for FastAPI: the `throttled` dependency and decorator, and the 429 in the OpenAPI schema.

```python
from fastapi import FastAPI
from traffik import HTTPThrottle, InMemoryBackend
from traffik.fastapi import document_rate_limits, throttled

backend = InMemoryBackend()
app = document_rate_limits(FastAPI(lifespan=backend.lifespan))
api = HTTPThrottle("api", rate="100/min")

@app.get("/search")
@throttled(api)
async def search(q: str): ...
```
"""

from __future__ import annotations

from traffik.fastapi.decorators import Throttled, throttled
from traffik.fastapi.openapi import RATE_LIMITED_RESPONSE, document_rate_limits, guarded_by_throttle

__all__ = [
    "RATE_LIMITED_RESPONSE",
    "Throttled",
    "document_rate_limits",
    "guarded_by_throttle",
    "throttled",
]
