"""An OpenAI-style HTTP API for one run (FastAPI on uvicorn, the `serve` extra) and a static chat page.

``app.py``: routes, limits, concurrency; ``schemas.py``: the wire format; ``static/index.html``: the page.
"""
