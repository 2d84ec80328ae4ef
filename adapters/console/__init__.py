"""The operator console and the patrol terminal: an aiohttp server bridged to NATS.

    from adapters.console.server import create_app, ConsoleServer
    app = create_app(district, ["nats://127.0.0.1:4222"], users_file="console-users.yaml")
    server = await ConsoleServer(app, "127.0.0.1", 8080).start()   # server.url
    ...
    await server.stop()

See docs/console.md.
"""
