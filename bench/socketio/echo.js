// The long-polling benchmark's reference: Socket.IO 4.8 echoing over its HTTP long-polling
// transport (`xtask/src/bench/polling.rs` drives it, speaking Engine.IO v4 polling as a client
// created with `transports: ["polling"]` would).
//
// Every `message` event is answered with a `message` event carrying the text upper-cased
// (ASCII in the benchmark, where JavaScript's `toUpperCase` and our rule agree). No Redis, no
// adapter: one instance, as our server runs. Server options at Socket.IO's defaults
// (`pingInterval` 25 s, `maxHttpBufferSize` 1 MB, `httpCompression` from 1 KiB up), no logging.
// Prints `Serving on http://HOST:PORT/` (wire::SERVING_ON) once it listens.
//
//   node echo.js --port 0

"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");

function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "0" },
    },
  });

  const httpServer = http.createServer();
  const io = new Server(httpServer, { serveClient: false });
  io.on("connection", (socket) => {
    socket.on("message", (text) => {
      socket.emit("message", String(text).toUpperCase());
    });
  });

  httpServer.listen(Number(values.port), values.host, () => {
    const { address, port } = httpServer.address();
    const host = address.includes(":") ? `[${address}]` : address;
    console.log(`Serving on http://${host}:${port}/`);
  });

  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();
