"""An exchange-connectivity example: a venue gateway over UDP on loopback with a fixed binary layout.

:mod:`hean.gateway.wire` holds the message layouts, :mod:`hean.gateway.server` puts the simulated venue
(:mod:`hean.stages.venue`) behind a UDP socket, :mod:`hean.gateway.client` is the engine side. A real
exchange adapter replaces the server with the exchange and keeps the client's shape: encode ORDERs, decode
datagrams into EXEC_REPORTs for the router.
"""
