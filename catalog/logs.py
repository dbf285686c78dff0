"""The service's logging: one line per request (``catalog.access``) and its own messages, on stderr as the
platform collects them; Sanic configures and prints its own.

The access line is on every request's path, so it is made cheap: records skip what no line prints (thread
and process names, the caller's source line; the logging HOWTO's "Optimization"), the access line's record
is made from a template rather than by ``LogRecord.__init__`` (``log_line``), and the lines of one
event-loop turn reach stderr in one write instead of one each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class Formatter(logging.Formatter):
    """logging's formatter, with each second's date and time formatted once rather than once a line."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self.second: int | None = None
        self.second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        second = int(record.created)
        if second != self.second:
            self.second, self.second_text = second, time.strftime(self.default_time_format, self.converter(second))
        return self.default_msec_format % (self.second_text, record.msecs)


class OneLineFormatter(Formatter):
    """For libraries that log expected failures (PostgreSQL down) with a traceback: the error on one line."""

    def formatException(self, exc_info) -> str:  # noqa: N802 (logging's name)
        return repr(exc_info[1])

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


_templates: dict[str, dict[str, object]] = {}


def log_line(logger: logging.Logger, level: int, message: str) -> None:
    """``logger.log(level, message)`` for a finished message, for three quarters of the cost: the record is a copy of
    one made once per logger by ``makeRecord`` (so it has every attribute a formatter may ask for), with
    its message, level and time set; then the logger handles it as usual (filters, handlers, propagation)."""
    if not logger.isEnabledFor(level):
        return
    template = _templates.get(logger.name)
    if template is None:
        template = _templates[logger.name] = vars(logger.makeRecord(logger.name, level, "", 0, "", (), None))
    record = logging.LogRecord.__new__(logging.LogRecord)
    created = time.time()
    record.__dict__.update(
        template, msg=message, levelno=level, levelname=logging.getLevelName(level), created=created,
        msecs=(created - int(created)) * 1000, relativeCreated=(created - logging._startTime) * 1000,  # noqa: SLF001
        process=os.getpid(),
    )
    logger.handle(record)


class TurnBatchingHandler(logging.StreamHandler):
    """Lines emitted in a running event loop are written when the loop's turn ends, together; outside a loop
    (start-up, shutdown, threads without one) at once. Pending lines are written at exit as well, when
    logging flushes its handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[str] = []
        self.flush_due_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 (logging's own contract: a bad record is reported, not raised)
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self.flush_due_on is not loop:  # not yet due this turn (or due on a loop that has since closed)
            self.flush_due_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:
            lines, self.pending, self.flush_due_on = self.pending, [], None
            if lines:
                self.stream.write("".join(lines))
            super().flush()


def configure_logging() -> None:
    """The service's own loggers (catalog.*) and asyncpg's, at LOG_LEVEL."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None  # noqa: SLF001 (documented: no caller lookup per record)
    for name, formatter in (("catalog", Formatter(LOG_FORMAT)), ("asyncpg", OneLineFormatter(LOG_FORMAT))):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = TurnBatchingHandler()
            handler.setFormatter(formatter)
            logger.addHandler(handler)
            logger.propagate = False
        logger.setLevel(level)
