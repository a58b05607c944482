"""`/v1/queries`: standing queries, with the one query schema (`engine.contracts.queries.QuerySpec`) as the body.

POST refuses an existing id (409); PUT creates or replaces (keeping `created_at`). Webhook secrets are write-only:
answers show them as `<redacted>`, and a PUT may send that back (or leave the secret out) to keep a sink's secret,
or leave `webhooks` out to keep every sink, so a GET -> edit -> PUT round trip never loses or overwrites a secret.
`api.max_queries` and `api.max_queries_per_camera` bound what is registered (422 beyond, naming the setting).
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.context import READ, WRITE, ApiContext, ctx
from api.schemas import QueryAnswer, QueryUpdate, error_answers
from engine.contracts.queries import REDACTED, QueryExists, QuerySpec, StandingQuery, from_spec
from stream.keys import ID_PATTERN

router = APIRouter(prefix="/v1/queries", tags=["queries"], responses=error_answers(401, 403))
QueryId = Path(..., pattern=ID_PATTERN.pattern, description="query id")
NEEDS_SECRET = f"a sink this query does not have needs its secret ({REDACTED} keeps only the secret of a sink it has)"


def _invalid(loc: tuple, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


def _check_limits(c: ApiContext, q: StandingQuery) -> None:
    """Refuse `q` beyond api.max_queries or api.max_queries_per_camera ('*' queries count on every camera). Two
    writers at once may both pass (the check reads, then the write comes): the engine bounds what it grounds per
    camera on its own (engine.max_queries_per_camera)."""
    s = c.settings
    others = [o for o in c.queries.all() if o.id != q.id]
    if len(others) >= s.max_queries:
        raise _invalid(("body",), f"at most {s.max_queries} standing queries (api.max_queries); {len(others)} are registered")
    everywhere = sum(1 for o in others if "*" in o.cameras)
    named = Counter(cam for o in others if "*" not in o.cameras for cam in set(o.cameras))
    cameras = set(named) if "*" in q.cameras else set(q.cameras)
    most, where = max(((named[cam], f"camera {cam}") for cam in cameras), default=(0, "every camera"))
    if everywhere + most + 1 > s.max_queries_per_camera:
        raise _invalid(("body", "cameras"), f"{where} would have {everywhere + most + 1} standing queries; at most "
                                            f"{s.max_queries_per_camera} (api.max_queries_per_camera)")


def _with_secrets(body: QueryUpdate, query_id: str, old: StandingQuery | None) -> QuerySpec:
    """The PUT body as a QuerySpec, each sink's secret filled in from the stored query by URL where the client sent
    `<redacted>` or none; without `webhooks` in the body, the stored sinks as they are."""
    if "webhooks" not in body.model_fields_set:
        sinks = [{"url": w.url, "secret": w.secret} for w in (old.webhooks if old else ())]
    else:
        known = {w.url: w.secret for w in (old.webhooks if old else ())}
        sinks = [{"url": w.url, "secret": known.get(w.url) if w.secret in (None, REDACTED) else w.secret}
                 for w in body.webhooks]
        missing = [i for i, w in enumerate(sinks) if w["secret"] is None]
        if missing:
            raise RequestValidationError([{"loc": ("body", "webhooks", i, "secret"), "msg": NEEDS_SECRET,
                                           "type": "value_error"} for i in missing])
    try:
        return QuerySpec.model_validate({**body.model_dump(exclude={"webhooks"}, exclude_unset=True), "id": query_id,
                                         "webhooks": sinks})
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


@router.get("", dependencies=[READ], response_model=list[QueryAnswer])
def list_queries(c: ApiContext = Depends(ctx)) -> list[dict]:
    return [q.to_dict(redact=True) for q in c.queries.all()]


@router.post("", status_code=201, dependencies=[WRITE], response_model=QueryAnswer,
             responses=error_answers(409, 413, 422))
def create_query(spec: QuerySpec, response: Response, c: ApiContext = Depends(ctx)) -> dict:
    redacted = [i for i, w in enumerate(spec.webhooks) if w.secret == REDACTED]
    if redacted:
        raise RequestValidationError([{"loc": ("body", "webhooks", i, "secret"), "msg": NEEDS_SECRET,
                                       "type": "value_error"} for i in redacted])
    q = from_spec(spec)
    _check_limits(c, q)
    try:
        c.queries.add(q, replace=False)
    except QueryExists:
        raise HTTPException(409, f"query {q.id!r} exists (PUT /v1/queries/{q.id} replaces it)") from None
    response.headers["Location"] = f"/v1/queries/{q.id}"
    return q.to_dict(redact=True)


@router.get("/{query_id}", dependencies=[READ], response_model=QueryAnswer, responses=error_answers(404, 422))
def get_query(query_id: str = QueryId, c: ApiContext = Depends(ctx)) -> dict:
    q = c.queries.get(query_id)
    if q is None:
        raise HTTPException(404, f"no query {query_id!r}")
    return q.to_dict(redact=True)


@router.put("/{query_id}", dependencies=[WRITE], response_model=QueryAnswer,
            responses={201: {"model": QueryAnswer, "description": "created (200: replaced)"}, **error_answers(413, 422)})
def put_query(body: QueryUpdate, response: Response, query_id: str = QueryId, c: ApiContext = Depends(ctx)) -> dict:
    if body.id is not None and body.id != query_id:
        raise _invalid(("body", "id"), f"must be {query_id!r} (the id in the path) or absent")
    old = c.queries.get(query_id)
    q = from_spec(_with_secrets(body, query_id, old))
    if old is not None and body.created_at is None:
        q = dataclasses.replace(q, created_at=old.created_at)
    _check_limits(c, q)
    c.queries.add(q, replace=True)
    response.status_code = 200 if old is not None else 201
    return q.to_dict(redact=True)


@router.delete("/{query_id}", status_code=204, dependencies=[WRITE], responses=error_answers(404, 422))
def delete_query(query_id: str = QueryId, c: ApiContext = Depends(ctx)) -> Response:
    if not c.queries.remove(query_id):
        raise HTTPException(404, f"no query {query_id!r}")
    return Response(status_code=204)
