"""Phone callers in interpreted rooms: Twilio Media Streams on the room server's port.

``twilio.py`` speaks Twilio's Media Streams WebSocket protocol at ``/telephony/twilio``
and joins each caller to a room as a :class:`~transports.webrtc.transport.RoomEndpoint`
(the room's interpretation session is the same one its WebRTC participants use);
``client.py`` is a local client of that protocol for tests and benchmarks. Import the
submodules directly: they need the ``webrtc`` extra (aiohttp).
"""
