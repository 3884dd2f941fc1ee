"""B4's ceiling: the least a FastAPI + SQLAlchemy app can do to answer `GET /v1/studies/{id}`
with the same body as ours, so that B4 can say what our layers cost.

One route. It checks `Authorization: Bearer <token>` against a constant (hmac.compare_digest),
reads the study by primary key in a session of its own (the same ORM model, engine setup and
driver as the service: service.db.make_engine, a pool of 20) and answers `StudyOut` (the same
schema, so the same JSON). What ours adds and this lacks: the middlewares (Host check, body
limit, request slots, latency metrics), the tenant check (a key cache lookup, or a query),
one transaction per request with its commit, and the dependency plumbing.

    python -m bench.bare_api --port 8001 --database-url sqlite:///... --token lrs_...
"""

from __future__ import annotations

import argparse
import hmac
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from sqlalchemy.orm import Session

from service.db import make_engine
from service.studies.models import Study
from service.studies.schemas import StudyOut

POOL_SIZE = 20  # Settings.db_pool_size's default, as the API runs


def create_app(database_url: str, token: str) -> FastAPI:
    """The bare app on `database_url`, accepting only `Bearer <token>`."""
    engine = make_engine(database_url, pool_size=POOL_SIZE, max_overflow=0)
    expected = f"Bearer {token}".encode()
    app = FastAPI()

    @app.get("/v1/studies/{study_id}")
    def get_study(study_id: str,
                  authorization: Annotated[str | None, Header()] = None) -> StudyOut:
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise HTTPException(401, "Invalid or missing API key.")
        with Session(engine) as session:
            study = session.get(Study, study_id)
            if study is None:
                raise HTTPException(404, f"Unknown study `{study_id}`.")
            return StudyOut.of(study)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.database_url, args.token), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
