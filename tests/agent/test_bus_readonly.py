"""The agent is read-only towards the controller: no Modbus write can leave the bus layer."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

from pymodbus.client import ModbusBaseClient

from agent.bus.link import READ_FUNCTIONS, PymodbusLink
from agent.bus.plan import Read, Table

AGENT = Path(__file__).resolve().parents[2] / "agent"
# Every request method of the pymodbus client that is not one of the four plain reads.
CLIENT_REQUESTS = {
    name
    for name in dir(ModbusBaseClient)
    if not name.startswith("_")
    and any(word in name for word in ("write", "read", "diag", "report", "file", "fifo"))
}
FORBIDDEN = CLIENT_REQUESTS - {
    "read_coils",
    "read_discrete_inputs",
    "read_holding_registers",
    "read_input_registers",
}


def test_only_the_four_read_functions_are_mapped() -> None:
    assert {
        "read_coils",
        "read_discrete_inputs",
        "read_holding_registers",
        "read_input_registers",
    } == READ_FUNCTIONS
    assert {"write_register", "write_coil", "readwrite_registers"} <= FORBIDDEN


def test_no_agent_source_names_a_write_or_other_request() -> None:
    offenders = []
    for path in AGENT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if name in FORBIDDEN:
                offenders.append(
                    f"{path.relative_to(AGENT.parent)}:{getattr(node, 'lineno', 0)}: {name}"
                )
    assert offenders == []


class RecordingClient:
    """Stands in for a pymodbus client and records every method the link calls."""

    connected = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_max_no_responses(self, count: int) -> None:
        self.calls.append("set_max_no_responses")

    def __getattr__(self, name: str) -> Any:
        async def request(address: int, *, count: int, device_id: int) -> Any:
            self.calls.append(name)
            return Response(count)

        return request


class Response:
    def __init__(self, count: int) -> None:
        self.registers = [0] * count
        self.bits = [False] * (count + 7)

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name
        return False


def test_reads_of_every_table_call_only_read_methods() -> None:
    client = RecordingClient()
    link = PymodbusLink(client, "test")

    async def read_all() -> None:
        for table in Table:
            await link.read(1, Read(table, 0, 3))

    asyncio.run(read_all())
    assert set(client.calls) - {"set_max_no_responses"} <= READ_FUNCTIONS
    assert len(client.calls) == 5
