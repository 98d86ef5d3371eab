"""A reference regional platform for the northbound forwarder (issue 21): a real HTTP
server (and an MQTT subscriber on a real broker) that checks every message it receives
against the JSON Schema derived from the mapping, and that a test can take down, slow
down, rate-limit or make refuse messages.

HTTP: each message is a POST of a JSON object to a path the mapping names; the platform
answers 200 when it takes it, 422 with ``{"reason": ...}`` when the body breaks the
schema or the test told it to refuse the message, 429 with Retry-After while rate
limited, 503 while "failing", and nothing at all while down (its port is closed). It
keeps every accepted message with its idempotency key; a key accepted twice is counted in
``duplicates`` (and answered 200: the copy is harmless to it, as to a platform that
deduplicates, but the test sees that it was sent).

The JSON Schema subset checked (`validate`): type (one or a list), enum, const,
properties, required, additionalProperties false, minLength: what
`fleet.northbound.mapping.NorthboundMapping.json_schema` generates. A validator of our
own rather than the ``jsonschema`` package: the subset is small, and the rig needs no
further dependency.

The platform is given its schemas (by message path, or by MQTT topic prefix); it does
not import the fleet: a real platform publishes its schema, it does not run our code.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _is(value: object, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[name])


def validate(schema: Mapping[str, Any], value: object, where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (the subset above), each with its JSON path;
    empty when it conforms."""
    problems: list[str] = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, n) for n in names):
            problems.append(f"{where}: expected {' or '.join(names)}, got {type(value).__name__}")
            return problems
    if isinstance(value, str) and len(value) < int(schema.get("minLength", 0)):
        problems.append(f"{where}: shorter than {schema['minLength']}")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        problems += [f"{where}.{k}: required" for k in schema.get("required", ()) if k not in value]
        for key, item in value.items():
            if key in properties:
                problems += validate(properties[key], item, f"{where}.{key}")
            elif schema.get("additionalProperties", True) is False:
                problems.append(f"{where}.{key}: not allowed")
    return problems


@dataclass(frozen=True, slots=True)
class Received:
    """One message the platform accepted: its key, path (or topic), body and arrival."""

    key: str
    path: str
    body: Mapping[str, Any]
    at: float


@dataclass
class PlatformLog:
    """What the platform saw (guarded by ``lock``)."""

    accepted: list[Received] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    throttled: int = 0
    failed: int = 0
    unauthorized: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, path: str, body: Mapping[str, Any]) -> None:
        """Record an accepted message (a key seen before is a duplicate)."""
        with self.lock:
            if key in self.keys:
                self.duplicates.append(key)
                return
            self.keys.add(key)
            self.accepted.append(Received(key, path, body, time.monotonic()))

    def snapshot(self) -> list[Received]:
        """The accepted messages so far, in arrival order."""
        with self.lock:
            return list(self.accepted)


@dataclass(frozen=True, slots=True)
class Auth:
    """What the platform demands: a bearer token, an HMAC key (the fleet's webhook
    scheme), or neither (mutual TLS is the server's TLS context)."""

    token: str = ""
    hmac_key: str = ""


class ReferencePlatform:
    """The HTTP reference platform (see the module docstring); use `running_platform`."""

    def __init__(
        self,
        schemas: Mapping[str, Mapping[str, Any]],
        *,
        key_field: str = "",
        auth: Auth = Auth(),
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.schemas = dict(schemas)
        self.key_field = key_field
        self.auth = auth
        self.tls = tls
        self.log = PlatformLog()
        self.refuse: Callable[[str, Mapping[str, Any]], str | None] = lambda path, body: None
        self.failing = False
        self.delay_s = 0.0
        self._throttle_left = 0
        self._retry_after = "1"
        self._lock = threading.Lock()
        self._host = host
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Open connections: `down` cuts kept-alive ones too, as a platform going away does.
        self.connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """The base URL the fleet is configured with."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def is_up(self) -> bool:
        """Whether the port is open."""
        return self._server is not None

    def up(self) -> None:
        """Open the port (the same port again after `down`)."""
        if self._server is not None:
            return
        platform = self

        class Handler(_Handler):
            owner = platform

        server = _Server((self._host, self._port), Handler)
        server.daemon_threads = True
        server.tls = self.tls
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="ref-platform", daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Close the port: connections are refused until `up`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def throttle(self, requests: int, retry_after: str) -> None:
        """Answer the next ``requests`` requests 429 with ``Retry-After: retry_after``."""
        with self._lock:
            self._throttle_left = requests
            self._retry_after = retry_after

    def _throttled(self) -> str | None:
        with self._lock:
            if self._throttle_left <= 0:
                return None
            self._throttle_left -= 1
            return self._retry_after

    def schema_for(self, path: str) -> Mapping[str, Any] | None:
        """The schema of messages POSTed to ``path``."""
        return self.schemas.get(path)


class _Server(ThreadingHTTPServer):
    """The HTTP server; with ``tls``, each connection's handshake runs in that
    connection's own thread (a client that stalls or fails it holds up no one else)."""

    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake (with ``tls``), then serve the connection."""
        if self.tls is not None:
            # The TLS socket takes the connection's descriptor over: close it on failure
            # (the raw socket the server would close no longer holds it).
            request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except (ssl.SSLError, OSError):
                with contextlib.suppress(OSError):
                    request.close()
                return  # e.g. no or a foreign client certificate: the client sees the alert
        super().finish_request(request, client_address)
        if self.tls is not None:
            request.close()  # the server's own close only reaches the detached raw socket

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a connection cut by `ReferencePlatform.down` is expected."""


class _Handler(BaseHTTPRequestHandler):
    owner: ReferencePlatform
    protocol_version = "HTTP/1.1"
    # The status line and headers go out before the body: without this, Nagle's algorithm
    # holds the body back for the client's delayed ACK (40 ms a message on loopback).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        """Count the connection in, so that `ReferencePlatform.down` can cut it."""
        super().setup()
        with self.owner._lock:
            self.owner.connections.add(self.connection)

    def finish(self) -> None:
        """Count the connection out."""
        with self.owner._lock:
            self.owner.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the platform's log, not stderr."""

    def _answer(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] = {}
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        """Take one message (see the module docstring for the answers)."""
        p = self.owner
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with p.log.lock:
            p.log.requests += 1
        if p.delay_s:
            time.sleep(p.delay_s)
        if p.failing:
            with p.log.lock:
                p.log.failed += 1
            self._answer(503, {"reason": "platform failing"})
            return
        wait = p._throttled()
        if wait is not None:
            with p.log.lock:
                p.log.throttled += 1
            self._answer(429, {"reason": "rate limited"}, {"Retry-After": wait})
            return
        if not self._authorized(raw):
            with p.log.lock:
                p.log.unauthorized += 1
            self._answer(401, {"reason": "not authorized"})
            return
        key = self.headers.get("Idempotency-Key", "")
        try:
            body = json.loads(raw)
        except ValueError:
            self._answer(400, {"reason": "not JSON"})
            return
        schema = p.schema_for(self.path)
        if schema is None:
            self._answer(404, {"reason": f"no such message path {self.path}"})
            return
        problems = validate(schema, body)
        if p.key_field and isinstance(body, dict) and body.get(p.key_field) != key:
            problems.append(f"$.{p.key_field}: differs from the Idempotency-Key header")
        if not key:
            problems.append("no Idempotency-Key header")
        if problems:
            with p.log.lock:
                p.log.invalid.append((key, problems))
            self._answer(422, {"reason": "; ".join(problems)})
            return
        refusal = p.refuse(self.path, body)
        if refusal is not None:
            with p.log.lock:
                p.log.refused.append(key)
            self._answer(422, {"reason": refusal})
            return
        p.log.take(key, self.path, body)
        self._answer(200, {"ok": True})

    def _authorized(self, raw: bytes) -> bool:
        auth = self.owner.auth
        if auth.token and self.headers.get("Authorization") != f"Bearer {auth.token}":
            return False
        if auth.hmac_key:
            stamp = self.headers.get("X-LiftWatch-Timestamp", "")
            mac = hmac.new(auth.hmac_key.encode(), stamp.encode() + b"." + raw, hashlib.sha256)
            given = self.headers.get("X-LiftWatch-Signature", "")
            if not hmac.compare_digest(given, "sha256=" + mac.hexdigest()):
                return False
        return True


@contextlib.contextmanager
def running_platform(
    schemas: Mapping[str, Mapping[str, Any]],
    *,
    key_field: str = "",
    auth: Auth = Auth(),
    tls: ssl.SSLContext | None = None,
) -> Iterator[ReferencePlatform]:
    """A reference platform serving on a free loopback port for the block."""
    platform = ReferencePlatform(schemas, key_field=key_field, auth=auth, tls=tls)
    platform.up()
    try:
        yield platform
    finally:
        platform.down()


def schemas_by_path(
    schemas: Mapping[str, Mapping[str, Any]], paths: Mapping[str, str]
) -> dict[str, Mapping[str, Any]]:
    """Schemas keyed by the path each message name is POSTed to (``paths``: name -> path)."""
    return {paths[name]: schema for name, schema in schemas.items()}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MqttPlatform:
    """The MQTT side of the reference platform: subscribes to ``prefix/#`` on a real
    broker, checks each message against the schema of its topic (the longest matching
    topic prefix in ``schemas``) and keeps it by its key field."""

    def __init__(
        self, host: str, port: int, schemas: Mapping[str, Mapping[str, Any]], key_field: str
    ) -> None:
        self.host, self.port = host, port
        self.schemas = dict(schemas)
        self.key_field = key_field
        self.log = PlatformLog()

    def schema_for(self, topic: str) -> Mapping[str, Any] | None:
        """The schema of the longest prefix of ``topic`` in the schemas."""
        found = [p for p in self.schemas if topic.startswith(p)]
        return self.schemas[max(found, key=len)] if found else None

    async def listen(self, topic_filter: str, ready: Callable[[], None]) -> None:
        """Subscribe (QoS 1) and keep taking messages until cancelled; ``ready`` is called
        once subscribed."""
        import aiomqtt

        async with aiomqtt.Client(self.host, self.port, identifier="reference-platform") as client:
            await client.subscribe(topic_filter, qos=1)
            ready()
            async for message in client.messages:
                topic = str(message.topic)
                payload = message.payload
                raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                try:
                    body = json.loads(raw)
                except ValueError:
                    with self.log.lock:
                        self.log.invalid.append(("", ["not JSON"]))
                    continue
                schema = self.schema_for(topic)
                problems = ["no schema for topic"] if schema is None else validate(schema, body)
                key = str(body.get(self.key_field, "")) if isinstance(body, dict) else ""
                if problems:
                    with self.log.lock:
                        self.log.invalid.append((key, problems))
                    continue
                self.log.take(key, topic, body)
