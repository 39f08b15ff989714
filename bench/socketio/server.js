// The fan-out benchmark's reference: Socket.IO 4.8 on the Redis Streams adapter, so that
// several instances share one room through one Redis (`bench/src/fanout.rs` drives it).
//
// Every socket joins one room; a `publish` event is broadcast to that room as a `message`
// event, to the sockets of every instance. WebSocket transport only, no per-message deflate
// (engine.io's default), no logging. Prints `Serving on http://HOST:PORT/` (wire::SERVING_ON)
// once it listens.
//
//   node server.js --port 0 --redis-url redis://127.0.0.1:6379

"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { createClient } = require("redis");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

const ROOM = "room";

async function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "0" },
      "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
    },
  });
  const redis = createClient({ url: values["redis-url"] });
  redis.on("error", (error) => console.error(`redis: ${error.message}`));
  await redis.connect();

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(redis),
    transports: ["websocket"],
    serveClient: false,
  });
  io.on("connection", (socket) => {
    socket.join(ROOM);
    socket.on("publish", (data) => {
      io.to(ROOM).emit("message", data);
    });
  });

  httpServer.listen(Number(values.port), values.host, () => {
    const { address, port } = httpServer.address();
    const host = address.includes(":") ? `[${address}]` : address;
    console.log(`Serving on http://${host}:${port}/`);
  });

  const stop = () => {
    io.close();
    redis.quit().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
