"""Every error as JSON in the contract's shape: ``{"detail": ...}`` with the right status, never HTML."""

from __future__ import annotations

import logging

import asyncpg
from sanic import HTTPResponse, Request
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import json

from catalog.validation import RequestValidationError

logger = logging.getLogger("catalog.errors")

# What PostgreSQL being down, restarting or out of connections looks like from here.
DATABASE_UNAVAILABLE = (
    OSError,  # refused or reset sockets; Tortoise's DBConnectionError is a ConnectionError too
    TimeoutError,  # no pooled connection within DB_ACQUIRE_TIMEOUT, or a statement past its timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed" on a connection the server dropped
    # "cannot switch to state ...; another operation is in progress": a connection caught mid-statement when
    # its server went away (seen on a replica stopped under load)
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)
RETRY_AFTER_SECONDS = "5"
# nginx's status for a request whose client closed the connection first: logged, never sent.
CLIENT_CLOSED_REQUEST = 499


def database_unavailable(exception: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        if isinstance(current, DATABASE_UNAVAILABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class JSONErrorHandler(ErrorHandler):
    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):  # not a server error, though Sanic would answer 500
            return json({"detail": "Client closed the request"}, status=CLIENT_CLOSED_REQUEST)
        if isinstance(exception, RequestValidationError):
            return json({"detail": exception.errors}, status=422)
        if isinstance(exception, SanicException):
            status = exception.status_code
            message = str(exception) or getattr(exception, "message", "") or "Error"
            if status >= 500:
                self.log(request, exception)
            return json({"detail": message}, status=status, headers=getattr(exception, "headers", None))
        if database_unavailable(exception):
            logger.warning("database unavailable: %r", exception)
            return json(
                {"detail": "Database unavailable, try again shortly"},
                status=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        self.log(request, exception)
        return json({"detail": "Internal Server Error"}, status=500)
