"""A read-only Modbus link to one endpoint, with failures sorted by kind.

Only read function codes are reachable from here: monitoring must never be able to move
a car or change its settings, so this module exposes no write at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException


class LinkFault(enum.Enum):
    """Why a request got no usable answer; each kind is counted separately."""

    TIMEOUT = "timeout"
    EXCEPTION_RESPONSE = "exception_response"
    DISCONNECTED = "disconnected"
    MALFORMED = "malformed"


class LinkError(Exception):
    """A request that got no usable answer."""

    def __init__(self, fault: LinkFault, detail: str) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int
    timeout_s: float
    retries: int


class ModbusTcpLink:
    """One Modbus TCP connection, shared by every slave behind that endpoint."""

    def __init__(self, endpoint: TcpEndpoint) -> None:
        self.endpoint = endpoint
        # pymodbus reconnects on its own when we leave reconnect_delay at its default; we
        # prefer to own reconnects in the poller so a dead gateway is backed off visibly.
        self._client = AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            timeout=endpoint.timeout_s,
            retries=endpoint.retries,
            reconnect_delay=0,
        )

    async def read_holding(self, slave: int, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers of ``slave``; raise `LinkError` on any failure."""
        if not self._client.connected:
            try:
                connected = await self._client.connect()
            except (OSError, ModbusException) as exc:
                raise LinkError(LinkFault.DISCONNECTED, str(exc)) from exc
            if not connected:
                raise LinkError(
                    LinkFault.DISCONNECTED,
                    f"cannot connect to {self.endpoint.host}:{self.endpoint.port}",
                )
        try:
            response = await self._client.read_holding_registers(
                address, count=count, device_id=slave
            )
        except ConnectionException as exc:
            raise LinkError(LinkFault.DISCONNECTED, str(exc)) from exc
        except ModbusIOException as exc:
            raise LinkError(LinkFault.TIMEOUT, str(exc)) from exc
        except ModbusException as exc:
            raise LinkError(LinkFault.MALFORMED, str(exc)) from exc
        if response.isError():
            raise LinkError(LinkFault.EXCEPTION_RESPONSE, f"slave {slave}: {response}")
        registers = list(response.registers)
        if len(registers) != count:
            raise LinkError(
                LinkFault.MALFORMED, f"slave {slave}: {len(registers)} registers, asked {count}"
            )
        return registers

    def close(self) -> None:
        """Close the connection; a later read reconnects."""
        self._client.close()
