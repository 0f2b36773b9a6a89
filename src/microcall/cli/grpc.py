"""``microcall grpc TARGET package.Service/Method '{json}'``: one unary gRPC call, over reflection.

The server must offer the reflection service (grpcio-reflection): the
request and response types are read from it, the JSON is turned into the
request message with protobuf's own ``json_format``, and the call goes
through a :class:`microcall.grpc.Channel` with the strategy, deadline and
priority asked for. What every attempt did comes from an
:class:`~microcall.grpc.RpcObserver`; the deadline an attempt carried is the
call's deadline less the attempt's start (gRPC sends it as ``grpc-timeout``,
which no observer sees).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from microcall.cli import _common, _options
from microcall.cli._common import CliError
from microcall.cli._timeline import Step, render, timeline

# Statuses that blame the request, as a 4xx does; any other non-OK status exits as a 5xx.
_CALLER_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
    }
)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Long enough for a server on the other side of the world to answer reflection.
REFLECTION_TIMEOUT = 10.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``grpc`` subcommand."""
    from microcall.cli.call import add_output_options

    parser = commands.add_parser(
        "grpc",
        help="one unary gRPC call to a server offering reflection, with its attempts",
        description="Call a unary method of a gRPC server that offers reflection, with a "
        "JSON request, and show the reply and every attempt behind it.",
        epilog="Exit status: 0 for OK, 4 for a status blaming the request (INVALID_ARGUMENT, "
        "NOT_FOUND, ...), 5 for other statuses, 6 for no answer, 2 for bad input.",
    )
    parser.add_argument("target", metavar="TARGET", help="host:port")
    parser.add_argument("method", metavar="METHOD", help="package.Service/Method")
    parser.add_argument("data", metavar="JSON", nargs="?", default="{}", help="the request")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS (the default for loopback targets only)",
    )
    add_output_options(parser)
    _options.add_call_options(parser)
    parser.set_defaults(command=run)


def parse_method(text: str) -> tuple[str, str]:
    """``"pkg.Service/Method"`` (or ``pkg.Service.Method``) -> ``("pkg.Service", "Method")``."""
    service, slash, name = text.strip("/").rpartition("/")
    if not slash:
        service, _, name = text.rpartition(".")
    if not service or not name:
        raise CliError(f"bad method {text!r}: expected package.Service/Method")
    return service, name


def run(arguments: argparse.Namespace) -> int:
    """Resolve the method by reflection, make the call, print it."""
    import grpc

    from microcall.errors import CallError
    from microcall.grpc import Channel, ChannelOptions

    service, name = parse_method(arguments.method)
    strategy = _options.parse_strategy(arguments.strategy)
    try:
        body = json.loads(arguments.data)
    except json.JSONDecodeError as error:
        raise CliError(f"bad JSON request: {error.msg}") from None
    host, _, port = arguments.target.rpartition(":")
    if not host or "/" in arguments.target or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"bad target {arguments.target!r}: expected host:port")
    plaintext = arguments.plaintext or host in _LOOPBACK
    request_type, response_type = _resolve(
        arguments.target, plaintext, service, name, min(arguments.deadline, REFLECTION_TIMEOUT)
    )

    from google.protobuf import json_format

    try:
        request = json_format.ParseDict(body, request_type())
    except json_format.ParseError as error:
        raise CliError(f"bad request for {request_type.DESCRIPTOR.full_name}: {error}") from None
    recorder = _Recorder()
    options = ChannelOptions(
        timeout=arguments.deadline,
        strategy=strategy,
        priority=arguments.priority,
        idempotent={service} if arguments.idempotent else (),
        insecure=plaintext,
    )
    targets = [arguments.target, *arguments.replica]
    reply: Any = None
    failure: CallError | None = None
    with Channel(targets, options, observers=[recorder]) as channel:
        call = channel.unary_unary(
            f"/{service}/{name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            reply = call(request)
        except CallError as error:
            failure = error
    steps = timeline(
        recorder.attempts,
        {},
        codes={a.index: a.code for a in recorder.attempts if getattr(a, "code", None)},
        deadlines={
            a.index: max(0.0, arguments.deadline - a.started) for a in recorder.attempts if a.sent
        },
    )
    code = "OK" if failure is None else _code_name(failure)
    as_json = _common.wants_json(arguments.json, arguments.pretty)
    document: dict[str, Any] = {
        "target": arguments.target,
        "method": f"{service}/{name}",
        "code": code,
        "response": None
        if reply is None
        else json_format.MessageToDict(reply, preserving_proto_field_name=True),
        "error": None
        if failure is None
        else {"type": type(failure).__name__, "message": _message(failure)},
        "attempts": [step.to_json() for step in steps],
    }
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_human(document, steps, arguments.deadline)
    if failure is None:
        return _common.EXIT_OK
    if isinstance(failure, grpc.RpcError) and code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        status = _common.EXIT_CLIENT_ERROR if code in _CALLER_CODES else _common.EXIT_SERVER_ERROR
        raise CliError(f"{code}: {_message(failure)}", status)
    raise CliError(f"no answer: {code}: {_message(failure)}", _common.EXIT_NO_ANSWER)


def _code_name(error: Exception) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        return str(code().name)
    return type(error).__name__


def _message(error: Exception) -> str:
    details = getattr(error, "details", None)
    if callable(details):
        return str(details())
    return str(getattr(error, "message", error))


def _resolve(
    target: str, plaintext: bool, service: str, name: str, timeout: float
) -> tuple[Any, Any]:
    """The request and response message classes of ``service/name``, read by reflection."""
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = (
        grpc.insecure_channel(target)
        if plaintext
        else grpc.secure_channel(target, grpc.ssl_channel_credentials())
    )
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise CliError(f"no answer from {target}", _common.EXIT_NO_ANSWER) from None
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        try:
            descriptor = pool.FindServiceByName(service)
        except KeyError:
            offered = ", ".join(sorted(database.get_services()))
            raise CliError(
                f"{target} offers no service {service!r}; it offers: {offered}"
            ) from None
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise CliError(f"{target} does not offer gRPC reflection") from None
            raise CliError(
                f"no answer from {target}: {error.code().name}", _common.EXIT_NO_ANSWER
            ) from None
        method = descriptor.methods_by_name.get(name)
        if method is None:
            known = ", ".join(sorted(descriptor.methods_by_name))
            raise CliError(f"{service} has no method {name!r}; it has: {known}")
        if method.client_streaming or method.server_streaming:
            raise CliError(f"{service}/{name} streams; only unary methods can be called")
        return (
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )


class _Recorder:
    """An RpcObserver keeping the attempts of the latest call."""

    def __init__(self) -> None:
        self.attempts: Sequence[Any] = ()

    def call_started(self, method: object) -> _Recorder:
        return self

    def attempt_started(self, index: int, kind: object, target: str, metadata: object) -> None:
        return None

    def call_ended(self, response: object, error: object, attempts: Sequence[Any]) -> None:
        self.attempts = tuple(attempts)


def _print_human(document: dict[str, Any], steps: Sequence[Step], deadline: float) -> None:
    from rich.json import JSON
    from rich.text import Text

    from microcall.cli.call import _console

    console = _console()
    ok = document["code"] == "OK"
    console.print(
        Text(f"{document['method']} {document['code']}", style="bold " + ("green" if ok else "red"))
    )
    if document["response"] is not None:
        console.print(JSON.from_data(document["response"]))
    elif document["error"] is not None:
        console.print(Text(_common.printable(document["error"]["message"]), style="red"))
    console.print()
    total = max((s.started + s.duration for s in steps), default=0.0)
    console.print(render(steps, total=total))
