from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json
from sanic_ext import openapi

from catalog import schemas

bp = Blueprint("health", url_prefix="/health")


@bp.get("")
@openapi.definition(summary="Liveness", tag="health", response={"application/json": schemas.Health})
async def health(request: Request) -> HTTPResponse:
    return json({"status": "healthy"})
