"""The tutorial's Tornado WebSocket server, the original that `cargo xtask bench` measures ours
against.

The handler is the tutorial's ("Realtime web application with Tornado and WebSocket"): on open
it prints "New connection" and sends "Welcome!", answers each message with message.upper()
printing "New message ...", prints "Connection closed". Changed for the benchmark: Python 3 and
asyncio; only the WebSocket route (no page); --quiet silences the prints (the benchmark passes
it); any Origin is accepted (the benchmark's client sends none, which Tornado accepts anyway);
it listens on 127.0.0.1 only, port 0 picks a free port, and it announces itself with the one
line the Rust servers print, `Serving on http://127.0.0.1:PORT/`; SIGINT and SIGTERM stop it
with status 0.

    python server.py [--port PORT] [--quiet]
"""

import argparse
import asyncio
import signal

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket


class WSHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, quiet):
        self.quiet = quiet

    def check_origin(self, origin):
        return True

    def open(self, *args):
        if not self.quiet:
            print("New connection")
        self.write_message("Welcome!")

    def on_message(self, message):
        if not self.quiet:
            print("New message {}".format(message))
        self.write_message(message.upper())

    def on_close(self):
        if not self.quiet:
            print("Connection closed")


def parse_args():
    parser = argparse.ArgumentParser(
        description="The tutorial's Tornado WebSocket server, for `cargo xtask bench`."
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1; 0 (the default) picks a free one"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no line per connection and message"
    )
    return parser.parse_args()


async def main():
    args = parse_args()
    app = tornado.web.Application([(r"/ws/", WSHandler, dict(quiet=args.quiet))])
    sockets = tornado.netutil.bind_sockets(args.port, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    host, port = sockets[0].getsockname()[:2]
    print("Serving on http://{}:{}/".format(host, port), flush=True)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
