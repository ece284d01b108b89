"""Slow clients: uvicorn closes idle keep-alive connections, but waits forever for request headers that trickle in
(slow-loris). This protocol gives every request `seconds` to finish its headers; the body has its own timeout
(`BodyLimitMiddleware`) and connections their cap (uvicorn's `limit_concurrency`)."""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol that closes a connection whose request headers are not complete in time."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            armed_cycle = self.cycle  # a new request (headers complete) replaces it

            def check() -> None:
                if self.transport.is_closing() or self.transport.get_protocol() is not self:
                    return  # gone, or upgraded to a WebSocket
                if self.cycle is armed_cycle:
                    self.transport.close()

            self._header_timer = self.loop.call_later(seconds, check)

    return HeaderTimeoutProtocol
