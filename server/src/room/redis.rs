//! The Redis engine (`--redis-url`): every instance shares one room through Redis, with one
//! order for all of them.
//!
//! - **Offsets and history: one Lua script** ([`PUBLISH`]). It creates the epoch if there is
//!   none, increments the offset, and appends the encoded message to a capped stream under the
//!   entry ID `0-OFFSET`, in one atomic step: there is one order, and the stream is the history.
//!   A Redis that restarted without its data has no epoch: the next script call makes a new one,
//!   so clients resuming from the old epoch get `recovered:false`.
//! - **Fan-out: each instance reads the stream** with a blocking `XREAD` from the last offset it
//!   delivered ([`Broker::follow`]), rather than PUB/SUB. A PUB/SUB message sent while an
//!   instance's subscription is down is gone, so PUB/SUB would need the stream as well to fill
//!   the hole, with two sources to reconcile. The stream alone is one source: the same loop that
//!   delivers live messages is the catch-up after a Redis outage, and it cannot skip or repeat
//!   (entries come in ID order from exactly where it stopped). The cost is one round trip per
//!   batch instead of a push, measured in `docs/BENCHMARKS.md`.
//! - **Presence**: each instance writes its member count with an expiry into one hash and sums
//!   the live entries, in one script ([`PRESENCE`]), every [`PRESENCE_EVERY`].
//!
//! When Redis cannot be reached the room keeps its members: publishing is refused ("broker
//! unavailable"), `room_broker_up` is 0 and `/readyz` names the degraded room, and the follower
//! reconnects by itself with backoff, then catches up from its last offset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::hub::{Delivery, Hub};
use crate::config::RedisUrl;
use crate::metrics::Metrics;

/// The room's keys (one room; the braces keep them in one Redis Cluster slot).
const KEY_META: &str = "realtime:{room}:meta";
const KEY_STREAM: &str = "realtime:{room}:stream";
const KEY_PRESENCE: &str = "realtime:{room}:presence";
/// The stream entry's one field: the encoded `message` frame.
const FIELD: &str = "f";

/// How often each instance reports its members and counts everyone's.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// An instance's count is forgotten this long after its last report (it stopped or was cut off).
const PRESENCE_TTL_MS: u64 = 3_000;
/// How long one `XREAD` waits for new entries before asking again.
const BLOCK_MS: u64 = 5_000;
/// Most entries one `XREAD` returns.
const BATCH: usize = 1_000;
/// The longest a publish may wait for Redis before it is refused.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect delays after Redis fails: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(2);

/// KEYS: meta, stream. ARGV: a new epoch in case Redis has none (fresh each call: a Redis that
/// lost its data must not get the old epoch back from the same instance), history length, message prefix, rest of the
/// message. Returns the offset.
const PUBLISH: &str = r"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. offset, 'f', ARGV[3] .. offset .. ARGV[4])
return offset
";

/// KEYS: meta. ARGV: candidate epoch. Returns `{epoch, latest offset}`, creating the epoch.
const META: &str = r"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
return {meta[1], meta[2] or '0'}
";

/// KEYS: presence. ARGV: instance, its member count, TTL in ms. Returns the live total.
const PRESENCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + tonumber(ARGV[3])))
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local count, expires = string.match(all[i + 1], '(%d+):(%d+)')
  if count == nil or tonumber(expires) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(count)
  end
end
return total
";

/// This instance's connection to the shared room.
pub struct Broker {
    client: redis::Client,
    /// For publishing and presence; set by the follower while it is connected, so publishing
    /// works exactly while the room is up (and is refused at once, not after a timeout, while
    /// it is down).
    commands: Mutex<Option<MultiplexedConnection>>,
    /// Whether the hub has had Redis's epoch and history at least once. Until then its epoch is
    /// this process's own, which no other instance knows, so the room takes no members (see
    /// [`super::Room::ready`]).
    synced: AtomicBool,
    /// Woken when `synced` turns true.
    on_synced: Notify,
    /// The name this instance reports its presence under.
    instance: String,
    history: usize,
    publish: Script,
    meta: Script,
    presence: Script,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker for `url`; [`Broker::follow`] connects (the server starts even while Redis is
    /// down).
    pub fn new(url: &RedisUrl, history: usize, metrics: Arc<Metrics>) -> Self {
        metrics.room_broker_up.set(0);
        Self {
            client: url.client(),
            commands: Mutex::new(None),
            synced: AtomicBool::new(false),
            on_synced: Notify::new(),
            instance: format!("{:016x}", super::random()),
            history,
            publish: Script::new(PUBLISH),
            meta: Script::new(META),
            presence: Script::new(PRESENCE),
            metrics,
        }
    }

    fn commands(&self) -> Option<MultiplexedConnection> {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the follower is connected to Redis.
    pub fn is_up(&self) -> bool {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Whether the room has had its epoch and history from Redis since this process started.
    pub fn has_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Returns once [`Broker::has_synced`].
    pub async fn synced(&self) {
        loop {
            let woken = self.on_synced.notified();
            if self.has_synced() {
                return;
            }
            woken.await;
        }
    }

    fn set_commands(&self, commands: Option<MultiplexedConnection>) {
        let up = commands.is_some();
        let was = std::mem::replace(
            &mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()),
            commands,
        );
        if was.is_some() != up {
            self.metrics.room_broker_up.set(i64::from(up));
            if up {
                info!("room broker (Redis) connected");
            } else {
                warn!(
                    "room broker (Redis) unavailable: the room refuses messages until it is back"
                );
            }
        }
    }

    /// Appends one message (everything after its offset, encoded) to the room; the follower of
    /// every instance delivers it. `Err` when Redis does not answer in time.
    pub async fn publish(&self, rest: &str) -> Result<(), ()> {
        let Some(mut commands) = self.commands() else { return Err(()) };
        let mut call = self.publish.prepare_invoke();
        call.key(KEY_META).key(KEY_STREAM);
        call.arg(super::new_epoch()).arg(self.history).arg(wire::room::MESSAGE_PREFIX).arg(rest);
        match tokio::time::timeout(PUBLISH_TIMEOUT, call.invoke_async::<u64>(&mut commands)).await {
            Ok(Ok(_offset)) => Ok(()),
            Ok(Err(error)) => {
                info!(%error, "publish refused: Redis failed");
                Err(())
            }
            Err(_) => {
                info!("publish refused: Redis did not answer in time");
                Err(())
            }
        }
    }

    /// Reports `local` members and returns the total over every live instance.
    pub async fn presence(&self, local: usize) -> Option<u32> {
        let mut commands = self.commands()?;
        let mut call = self.presence.prepare_invoke();
        call.key(KEY_PRESENCE).arg(&self.instance).arg(local).arg(PRESENCE_TTL_MS);
        match tokio::time::timeout(PUBLISH_TIMEOUT, call.invoke_async::<u32>(&mut commands)).await {
            Ok(Ok(total)) => Some(total),
            _ => None,
        }
    }

    /// Delivers the room's stream into `hub` until `shutdown`: loads the history, then follows
    /// the stream; after any failure, reconnects with backoff and carries on from the last
    /// offset delivered (or starts over if Redis has a new epoch).
    pub async fn follow(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut delay = RETRY_FIRST;
        loop {
            let error = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.follow_once(&hub, &mut delay) => match result {
                    Ok(never) => match never {},
                    Err(error) => error,
                },
            };
            self.set_commands(None);
            info!(%error, retry_in = ?delay, "room broker (Redis) connection failed");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_LAST);
        }
    }

    async fn follow_once(
        &self,
        hub: &Hub,
        delay: &mut Duration,
    ) -> redis::RedisResult<std::convert::Infallible> {
        let block = Duration::from_millis(BLOCK_MS);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(block + Duration::from_secs(2)));
        // Two connections: a blocking XREAD holds its connection until it returns.
        let mut connection =
            self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let commands_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let commands =
            self.client.get_multiplexed_async_connection_with_config(&commands_config).await?;
        let (epoch, last): (String, u64) =
            self.meta.key(KEY_META).arg(super::new_epoch()).invoke_async(&mut connection).await?;
        if epoch != hub.epoch() || last < hub.last() {
            let history = self.load_history(&mut connection).await?;
            info!(epoch, last, kept = history.len(), "room history loaded from Redis");
            hub.reset(epoch, history);
        }
        self.set_commands(Some(commands));
        self.synced.store(true, Ordering::Release);
        self.on_synced.notify_waiters();
        *delay = RETRY_FIRST;
        // Where to read on from: the last offset seen, delivered or not (an entry that does not
        // decode is skipped once, not read again forever).
        let mut cursor = hub.last();
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(KEY_STREAM)
                .arg(format!("0-{cursor}"))
                .query_async(&mut connection)
                .await?;
            let Some(reply) = reply else {
                // Nothing new within BLOCK_MS: make sure the epoch is still ours (a Redis that
                // restarted empty between two reads would otherwise never be noticed).
                let (epoch, _): (String, u64) = self
                    .meta
                    .key(KEY_META)
                    .arg(super::new_epoch())
                    .invoke_async(&mut connection)
                    .await?;
                if epoch != hub.epoch() {
                    let history = self.load_history(&mut connection).await?;
                    hub.reset(epoch, history);
                    cursor = hub.last();
                }
                continue;
            };
            for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
                if let Some(offset) = offset_of(&entry.id) {
                    cursor = cursor.max(offset);
                }
                let Some((offset, frame)) = decode(entry) else {
                    info!("room stream entry that is not ours skipped");
                    continue;
                };
                if hub.deliver(offset, frame) == Delivery::Gap {
                    warn!(offset, "room stream skipped offsets (trimmed before this instance read them); members reconnect");
                }
            }
        }
    }

    /// The newest `history` entries of the stream, oldest first.
    async fn load_history(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Vec<(u64, Utf8Bytes)>> {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(KEY_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.history)
            .query_async(connection)
            .await?;
        let mut entries: Vec<_> = reply.ids.into_iter().filter_map(decode).collect();
        entries.reverse();
        Ok(entries)
    }
}

/// A stream entry as `(offset, frame)`: the offset is the entry ID's sequence part.
fn decode(entry: StreamId) -> Option<(u64, Utf8Bytes)> {
    let offset = offset_of(&entry.id)?;
    match entry.map.get(FIELD)? {
        Value::BulkString(bytes) => {
            let text = String::from_utf8(bytes.clone()).ok()?;
            Some((offset, Utf8Bytes::from(text)))
        }
        _ => None,
    }
}

/// The offset in an entry ID `0-OFFSET`.
fn offset_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}
