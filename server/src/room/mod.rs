//! The room at `/ws/room`: one conversation that every connected page joins, with offsets,
//! history, recovery after a reconnect, presence and a per-connection publish rate.
//!
//! [`Room`] is engine-neutral: the [`hub::Hub`] holds the state every engine shares, and the
//! engine says where offsets come from. Embedded (the default): this process assigns them.
//! Redis (`--redis-url`): Redis assigns them for every instance at once ([`redis`]). A
//! [`Member`] is one connection's place in the room, whichever transport carries it.

pub mod hub;
pub mod redis;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wire::room::Resume;

use crate::mailbox::{End, Mailbox};
use crate::metrics::{Metrics, RoomRefusal};
use crate::Config;

use self::hub::Hub;

/// Why a join was refused while the room is not [`Room::ready`] (a 503's body, with
/// `Retry-After`).
pub const NOT_READY: &str =
    "the room is not ready: this instance has not reached its broker (Redis) since it started";

/// Presence frames go out at most this often: joins and leaves in a burst become one frame.
pub const PRESENCE_COALESCE: Duration = Duration::from_millis(250);

/// Why a message was not published; the client gets a `refused` frame with [`Refused::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over `--room-rate`.
    Rate,
    /// Redis cannot be reached.
    Broker,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Rate => wire::room::REFUSED_RATE,
            Refused::Broker => wire::room::REFUSED_BROKER,
        }
    }

    fn metric(self) -> RoomRefusal {
        match self {
            Refused::Rate => RoomRefusal::Rate,
            Refused::Broker => RoomRefusal::Broker,
        }
    }
}

#[derive(Debug)]
enum Engine {
    Embedded,
    Redis(Arc<redis::Broker>),
}

/// The room, shared by every connection of this instance.
#[derive(Debug)]
pub struct Room {
    hub: Arc<Hub>,
    engine: Engine,
    rate: u32,
    next_id: AtomicU64,
    /// Woken when a member joins or leaves, for the presence task.
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl Room {
    /// Sets the room up as `config` says and starts its background tasks (presence, and the
    /// Redis engine's follower), which stop when `shutdown` is cancelled.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let hub = Arc::new(Hub::new(new_epoch(), config.room_history, Arc::clone(&metrics)));
        let engine = match &config.redis_url {
            None => {
                metrics.room_broker_up.set(1);
                Engine::Embedded
            }
            Some(url) => {
                let broker = redis::Broker::new(url, config.room_history, Arc::clone(&metrics));
                let broker = Arc::new(broker);
                tracker.spawn(Arc::clone(&broker).follow(Arc::clone(&hub), shutdown.clone()));
                Engine::Redis(broker)
            }
        };
        let room = Arc::new(Self {
            hub,
            engine,
            rate: config.room_rate,
            next_id: AtomicU64::new(1),
            changed: Notify::new(),
            metrics,
        });
        tracker.spawn(Arc::clone(&room).presence(shutdown.clone()));
        room
    }

    /// Joins a new member, resuming from `resume` if given.
    pub fn join(self: &Arc<Self>, resume: Option<&Resume>) -> (Member, Vec<Utf8Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // 24 random bits: among a thousand members two share a name about 3 % of the time
        // (16 bits would make that a near certainty), and the page marks "yours" by name.
        let name = format!("guest-{:06x}", random() & 0xff_ffff);
        let joined = self.hub.join(id, &name, resume);
        self.changed.notify_one();
        self.metrics.room_members.inc();
        debug!(id, name, recovered = joined.recovered, "joined the room");
        let bucket = Bucket::new(self.rate, Instant::now());
        let member = Member { id, name, room: Arc::clone(self), mailbox: joined.mailbox, bucket };
        (member, joined.frames)
    }

    /// Whether the room takes members. With Redis, not until the broker has been reached once
    /// since this process started: before that the room's epoch is this process's own, and a
    /// page that joined it would be told its history was reset, then reset again once the real
    /// epoch arrives. Joins in that window are refused with 503 and `Retry-After` (the page and
    /// the CLI retry as after any failed connection). A broker lost *after* that keeps its
    /// members and takes new ones: the room still knows its epoch and history, and only
    /// publishing is refused.
    pub fn ready(&self) -> bool {
        match &self.engine {
            Engine::Embedded => true,
            Engine::Redis(broker) => broker.has_synced(),
        }
    }

    /// Returns once the room is [`Room::ready`] (at once with the embedded engine).
    pub async fn until_ready(&self) {
        if let Engine::Redis(broker) = &self.engine {
            broker.synced().await;
        }
    }

    /// Why the room is degraded, if it is (for `/readyz`).
    pub fn degraded(&self) -> Option<&'static str> {
        match &self.engine {
            Engine::Redis(broker) if !broker.has_synced() => Some("waiting for its broker"),
            Engine::Redis(broker) if !broker.is_up() => Some("broker unavailable"),
            _ => None,
        }
    }

    async fn publish(&self, from: &str, text: &str) -> Result<(), Refused> {
        let rest = wire::room::message_rest(unix_ms(), from, text);
        match &self.engine {
            Engine::Embedded => {
                self.hub.publish_next(&rest);
                Ok(())
            }
            Engine::Redis(broker) => broker.publish(&rest).await.map_err(|()| Refused::Broker),
        }
    }

    /// Sends presence frames when the number of members changes, at most every
    /// [`PRESENCE_COALESCE`]; with Redis, also counts the other instances' members each
    /// [`redis::PRESENCE_EVERY`].
    async fn presence(self: Arc<Self>, shutdown: CancellationToken) {
        let every = match self.engine {
            Engine::Redis(_) => redis::PRESENCE_EVERY,
            Engine::Embedded => Duration::from_secs(3600),
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(every) => {}
            }
            let local = self.hub.local();
            let elsewhere = match &self.engine {
                Engine::Embedded => 0,
                Engine::Redis(broker) => match broker.presence(local).await {
                    Some(total) => total.saturating_sub(u32::try_from(local).unwrap_or(u32::MAX)),
                    None => continue,
                },
            };
            self.hub.presence(elsewhere);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PRESENCE_COALESCE) => {}
            }
        }
    }
}

/// One connection's place in the room: its name, its mailbox and its publish allowance.
/// Dropping it leaves the room.
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    pub name: String,
    room: Arc<Room>,
    mailbox: Mailbox,
    bucket: Bucket,
}

impl Member {
    /// Publishes `text` to the room as this member, unless it is over the rate or the broker is
    /// down. The message comes back through the mailbox like everyone else's.
    pub async fn publish(&mut self, text: &str) -> Result<(), Refused> {
        let result = if self.bucket.take(Instant::now()) {
            self.room.publish(&self.name, text).await
        } else {
            Err(Refused::Rate)
        };
        match result {
            Ok(()) => {
                self.room.metrics.room_published.inc();
            }
            Err(refused) => self.room.metrics.room_refused(refused.metric()),
        }
        result
    }

    /// The next frame for this member, or why it must go.
    pub async fn next(&mut self) -> Result<Utf8Bytes, End> {
        self.mailbox.recv().await
    }

    /// A frame already waiting, if any.
    pub fn try_next(&mut self) -> Option<Utf8Bytes> {
        self.mailbox.try_recv()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.room.hub.leave(self.id);
        self.room.changed.notify_one();
        self.room.metrics.room_members.dec();
    }
}

/// A token bucket: `rate` messages per second, with a burst of `rate`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self { tokens: rate, rate, at: now }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A random number from the standard library's per-process random keys (no RNG crate needed
/// for names and epochs, which only have to differ, not resist guessing).
pub fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), unix_ms()))
}

/// A new epoch: 16 hex digits, different at every start.
pub fn new_epoch() -> String {
    format!("{:016x}", random())
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(20, start);
        assert!((0..20).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(50)));
        assert!(!bucket.take(start + Duration::from_millis(50)));
        let later = start + Duration::from_secs(10);
        assert_eq!((0..25).filter(|_| bucket.take(later)).count(), 20);
    }

    #[test]
    fn epochs_are_valid_and_differ() {
        let (a, b) = (new_epoch(), new_epoch());
        assert!(wire::room::is_epoch(&a), "{a}");
        assert_ne!(a, b);
    }
}
