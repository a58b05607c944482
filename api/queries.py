"""`/v1/queries`: standing queries, with the one query schema (`engine.contracts.queries.QuerySpec`) as the body.

POST refuses an existing id (409); PUT creates or replaces (keeping `created_at`). Webhook secrets
are write-only: responses show them as `<redacted>`.
"""
from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError

from api.context import READ, WRITE, ApiContext, ctx
from api.schemas import QueryAnswer, error_answers
from engine.contracts.queries import QueryExists, QuerySpec, from_spec
from stream.keys import ID_PATTERN

router = APIRouter(prefix="/v1/queries", tags=["queries"], responses=error_answers(401, 403))
QueryId = Path(..., pattern=ID_PATTERN.pattern, description="query id")


@router.get("", dependencies=[READ], response_model=list[QueryAnswer])
def list_queries(c: ApiContext = Depends(ctx)) -> list[dict]:
    return [q.to_dict(redact=True) for q in c.queries.all()]


@router.post("", status_code=201, dependencies=[WRITE], response_model=QueryAnswer, responses=error_answers(409, 422))
def create_query(spec: QuerySpec, response: Response, c: ApiContext = Depends(ctx)) -> dict:
    q = from_spec(spec)
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
            responses={201: {"model": QueryAnswer, "description": "created (200: replaced)"}, **error_answers(422)})
def put_query(spec: QuerySpec, response: Response, query_id: str = QueryId, c: ApiContext = Depends(ctx)) -> dict:
    if spec.id is not None and spec.id != query_id:
        raise RequestValidationError([{"loc": ("body", "id"), "msg": f"must be {query_id!r} (the id in the path) or absent",
                                       "type": "value_error"}])
    old = c.queries.get(query_id)
    q = from_spec(spec.model_copy(update={"id": query_id}))
    if old is not None and spec.created_at is None:
        q = dataclasses.replace(q, created_at=old.created_at)
    c.queries.add(q, replace=True)
    response.status_code = 200 if old is not None else 201
    return q.to_dict(redact=True)


@router.delete("/{query_id}", status_code=204, dependencies=[WRITE], responses=error_answers(404, 422))
def delete_query(query_id: str = QueryId, c: ApiContext = Depends(ctx)) -> Response:
    if not c.queries.remove(query_id):
        raise HTTPException(404, f"no query {query_id!r}")
    return Response(status_code=204)
