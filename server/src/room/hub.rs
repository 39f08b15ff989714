//! The room's core, the same for every engine: its epoch, its latest offset, the history kept
//! for recovery, and the members' mailboxes, all behind one lock.
//!
//! One lock is what makes joining exact: a member's history is cut from the same state that
//! registers its mailbox, so the first live message it gets is the one right after its last
//! history message (no gap, no duplicate). Each message is encoded once; every mailbox gets a
//! clone of the same bytes. Engines only decide where offsets come from: the embedded engine
//! assigns them here ([`Hub::publish_next`]), the Redis engine feeds what Redis ordered
//! ([`Hub::deliver`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wire::room::{Resume, RECENT_ON_JOIN};

use crate::mailbox::{self, End, Mailbox, Postbox};
use crate::metrics::Metrics;

/// What a new member gets: its first frames (`joined`, then history) and its mailbox for the
/// live ones.
#[derive(Debug)]
pub struct Joined {
    pub frames: Vec<Utf8Bytes>,
    pub mailbox: Mailbox,
    pub recovered: bool,
}

/// What [`Hub::deliver`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The next offset: kept and fanned out.
    Delivered,
    /// Already had it (an offset at or below the latest): ignored.
    Duplicate,
    /// Offsets were skipped (the engine lost some): the history was restarted at this one and
    /// every member was told to reconnect, since its stream would have a hole.
    Gap,
}

#[derive(Debug)]
struct State {
    epoch: String,
    last: u64,
    history: VecDeque<(u64, Utf8Bytes)>,
    members: HashMap<u64, Postbox>,
    /// Members on other instances, as the engine last counted them (0 when embedded).
    elsewhere: u32,
    /// The count in the last presence frame sent.
    announced: u32,
}

/// The room's shared state.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty room in `epoch`, keeping the last `capacity` messages.
    pub fn new(epoch: String, capacity: usize, metrics: Arc<Metrics>) -> Self {
        let state = State {
            epoch,
            last: 0,
            history: VecDeque::with_capacity(capacity.min(1024)),
            members: HashMap::new(),
            elsewhere: 0,
            announced: 0,
        };
        Self { state: Mutex::new(state), capacity: capacity.max(1), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters more than stopping the room would: carry on with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current epoch.
    pub fn epoch(&self) -> String {
        self.lock().epoch.clone()
    }

    /// The latest offset (0 for an empty room).
    pub fn last(&self) -> u64 {
        self.lock().last
    }

    /// Members connected to this instance.
    pub fn local(&self) -> usize {
        self.lock().members.len()
    }

    /// Adds member `id` named `you`: its `joined` frame and history, cut from the same state
    /// that registers its mailbox.
    pub fn join(&self, id: u64, you: &str, resume: Option<&Resume>) -> Joined {
        let (postbox, mailbox) = mailbox::new();
        let mut state = self.lock();
        let (recovered, from) = replay(&state.history, &state.epoch, state.last, resume);
        state.members.insert(id, postbox);
        let online = online(&state);
        if online != state.announced {
            // The joiner is told a count the others were not: the next presence round sends
            // the current one to everybody, whatever it is (else a joiner told a count from a
            // stale `elsewhere` would keep it when the total settles back at `announced`).
            state.announced = u32::MAX;
        }
        let joined = wire::room::joined(you, &state.epoch, state.last, online, recovered);
        let mut frames = Vec::with_capacity(1 + state.history.len() - from);
        frames.push(Utf8Bytes::from(joined));
        frames.extend(state.history.range(from..).map(|(_, frame)| frame.clone()));
        drop(state);
        self.metrics.room_joined(resume.is_some(), recovered);
        Joined { frames, mailbox, recovered }
    }

    /// Removes member `id` (its connection ended).
    pub fn leave(&self, id: u64) {
        self.lock().members.remove(&id);
    }

    /// The embedded engine's publish: the next offset is assigned here and the message
    /// `{prefix}{offset}{rest}` delivered; returns the offset.
    pub fn publish_next(&self, rest: &str) -> u64 {
        let mut state = self.lock();
        let offset = state.last + 1;
        let frame = Utf8Bytes::from(format!("{}{offset}{rest}", wire::room::MESSAGE_PREFIX));
        self.append(&mut state, offset, frame);
        offset
    }

    /// Delivers a message whose offset the engine assigned (Redis).
    pub fn deliver(&self, offset: u64, frame: Utf8Bytes) -> Delivery {
        let mut state = self.lock();
        if offset <= state.last {
            return Delivery::Duplicate;
        }
        let delivery = if offset == state.last + 1 {
            Delivery::Delivered
        } else {
            state.history.clear();
            end_all(&mut state, End::Slow);
            Delivery::Gap
        };
        self.append(&mut state, offset, frame);
        delivery
    }

    fn append(&self, state: &mut State, offset: u64, frame: Utf8Bytes) {
        state.last = offset;
        if state.history.len() == self.capacity {
            state.history.pop_front();
        }
        state.history.push_back((offset, frame.clone()));
        self.fan_out(state, &frame);
    }

    /// Posts `frame` to every member; a member whose mailbox is full is ended as too slow.
    fn fan_out(&self, state: &mut State, frame: &Utf8Bytes) {
        let mut slow = Vec::new();
        for (id, postbox) in &state.members {
            if postbox.post(frame).is_err() {
                slow.push(*id);
            }
        }
        let delivered = state.members.len() - slow.len();
        for id in &slow {
            if let Some(postbox) = state.members.remove(id) {
                postbox.end(End::Slow);
            }
        }
        self.metrics.room_fanned_out(delivered, slow.len());
    }

    /// Starts over in `epoch` with `history` (oldest first), as the engine has it: every
    /// member is told to reconnect, since its offsets belong to the old epoch. A no-op when
    /// nothing changed.
    pub fn reset(&self, epoch: String, history: Vec<(u64, Utf8Bytes)>) {
        let mut state = self.lock();
        let last = history.last().map_or(0, |(offset, _)| *offset);
        if state.epoch == epoch && state.last == last {
            return;
        }
        state.epoch = epoch;
        state.last = last;
        let skip = history.len().saturating_sub(self.capacity);
        state.history = history.into_iter().skip(skip).collect();
        end_all(&mut state, End::Reset);
    }

    /// Records how many members other instances have; sends a presence frame to every member
    /// if the total changed since the last one. Returns the total.
    pub fn presence(&self, elsewhere: u32) -> u32 {
        let mut state = self.lock();
        state.elsewhere = elsewhere;
        let online = online(&state);
        if online != state.announced {
            state.announced = online;
            let frame = Utf8Bytes::from(wire::room::presence(online));
            self.fan_out(&mut state, &frame);
        }
        online
    }
}

fn online(state: &State) -> u32 {
    u32::try_from(state.members.len()).unwrap_or(u32::MAX).saturating_add(state.elsewhere)
}

fn end_all(state: &mut State, why: End) {
    for (_, postbox) in state.members.drain() {
        postbox.end(why);
    }
}

/// Whether a member resuming from `resume` is recovered, and the index in `history` from which
/// it gets messages: everything after its offset when the history still holds all of it in
/// its epoch; otherwise the last [`RECENT_ON_JOIN`].
pub fn replay(
    history: &VecDeque<(u64, Utf8Bytes)>,
    epoch: &str,
    last: u64,
    resume: Option<&Resume>,
) -> (bool, usize) {
    let recent = history.len().saturating_sub(RECENT_ON_JOIN);
    let Some(resume) = resume else { return (false, recent) };
    if resume.epoch != epoch || resume.offset > last {
        return (false, recent);
    }
    let first = history.front().map_or(last + 1, |(offset, _)| *offset);
    if resume.offset + 1 < first {
        return (false, recent);
    }
    // Offsets in the history are consecutive, so the position follows from the first one.
    let from = usize::try_from(resume.offset + 1 - first).unwrap_or(usize::MAX);
    (true, from.min(history.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(capacity: usize) -> Hub {
        Hub::new("e1".into(), capacity, Arc::new(Metrics::new()))
    }

    fn resume(epoch: &str, offset: u64) -> Resume {
        Resume { epoch: epoch.into(), offset }
    }

    fn offsets(frames: &[Utf8Bytes]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|frame| {
                let rest = frame.as_str().strip_prefix(wire::room::MESSAGE_PREFIX)?;
                let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                rest[..digits].parse().ok()
            })
            .collect()
    }

    #[test]
    fn a_fresh_join_gets_joined_then_the_recent_history() {
        let hub = hub(1000);
        for _ in 0..60 {
            hub.publish_next(",\"text\":\"x\"}");
        }
        let joined = hub.join(1, "guest-1", None);
        assert!(joined.frames[0].as_str().starts_with("{\"type\":\"joined\""));
        assert!(joined.frames[0].as_str().contains("\"offset\":60,"));
        assert!(!joined.recovered);
        assert_eq!(offsets(&joined.frames), (11..=60).collect::<Vec<_>>());
    }

    #[test]
    fn a_resume_within_the_history_gets_exactly_what_it_missed() {
        let hub = hub(10);
        for _ in 0..25 {
            hub.publish_next("}");
        }
        let joined = hub.join(1, "g", Some(&resume("e1", 17)));
        assert!(joined.recovered);
        assert_eq!(offsets(&joined.frames), (18..=25).collect::<Vec<_>>());
        // The oldest kept is 16: resuming from 15 still works, from 14 does not.
        assert!(hub.join(2, "g", Some(&resume("e1", 15))).recovered);
        let old = hub.join(3, "g", Some(&resume("e1", 14)));
        assert!(!old.recovered);
        assert_eq!(offsets(&old.frames), (16..=25).collect::<Vec<_>>());
        let up_to_date = hub.join(4, "g", Some(&resume("e1", 25)));
        assert!(up_to_date.recovered);
        assert_eq!(offsets(&up_to_date.frames), Vec::<u64>::new());
    }

    #[test]
    fn another_epoch_or_a_future_offset_is_not_recovered() {
        let hub = hub(10);
        hub.publish_next("}");
        assert!(!hub.join(1, "g", Some(&resume("e0", 1))).recovered);
        assert!(!hub.join(2, "g", Some(&resume("e1", 2))).recovered);
        assert!(
            Hub::new("e".into(), 5, Arc::new(Metrics::new()))
                .join(1, "g", Some(&resume("e", 0)))
                .recovered
        );
    }

    #[tokio::test]
    async fn live_messages_follow_the_history_without_gap_or_duplicate() {
        let hub = hub(100);
        hub.publish_next("}");
        let mut joined = hub.join(1, "g", Some(&resume("e1", 0)));
        hub.publish_next("}");
        assert_eq!(offsets(&joined.frames), vec![1]);
        let live = joined.mailbox.recv().await.expect("live");
        assert_eq!(offsets(&[live]), vec![2]);
    }

    #[tokio::test]
    async fn a_full_mailbox_ends_only_that_member() {
        let hub = hub(10_000);
        let mut slow = hub.join(1, "slow", None);
        let mut fast = hub.join(2, "fast", None);
        for _ in 0..=mailbox::CAPACITY {
            hub.publish_next("}");
            fast.mailbox.recv().await.expect("fast keeps up");
        }
        assert_eq!(hub.local(), 1);
        for _ in 0..mailbox::CAPACITY {
            assert!(slow.mailbox.recv().await.is_ok());
        }
        assert_eq!(slow.mailbox.recv().await, Err(End::Slow));
    }

    #[tokio::test]
    async fn delivery_skips_duplicates_and_resets_members_on_a_gap() {
        let hub = hub(10);
        assert_eq!(hub.deliver(1, "a".into()), Delivery::Delivered);
        assert_eq!(hub.deliver(1, "a".into()), Delivery::Duplicate);
        let mut member = hub.join(1, "g", None);
        assert_eq!(hub.deliver(5, "b".into()), Delivery::Gap);
        assert_eq!(member.mailbox.recv().await, Err(End::Slow));
        assert_eq!(hub.last(), 5);
    }

    #[tokio::test]
    async fn a_reset_starts_a_new_epoch_and_sends_members_away() {
        let hub = hub(3);
        hub.publish_next("}");
        let mut member = hub.join(1, "g", None);
        let history: Vec<_> = (1..=5).map(|n| (n, Utf8Bytes::from(format!("m{n}")))).collect();
        hub.reset("e2".into(), history);
        assert_eq!(member.mailbox.recv().await, Err(End::Reset));
        assert_eq!((hub.epoch(), hub.last()), ("e2".to_owned(), 5));
        let joined = hub.join(2, "g", Some(&resume("e2", 2)));
        assert!(joined.recovered);
        assert_eq!(joined.frames.len(), 1 + 3);
    }

    #[tokio::test]
    async fn a_joiner_told_a_stale_count_gets_the_settled_one() {
        let hub = hub(10);
        assert_eq!(hub.presence(2), 2); // nobody here yet; two elsewhere
        let mut member = hub.join(1, "g", None);
        assert!(member.frames[0].as_str().contains("\"online\":3"));
        // One of those elsewhere left: the total is back at the last announced 2.
        assert_eq!(hub.presence(1), 2);
        assert_eq!(member.mailbox.recv().await.expect("presence"), wire::room::presence(2));
    }

    #[tokio::test]
    async fn presence_is_sent_only_when_the_count_changes() {
        let hub = hub(10);
        let mut member = hub.join(1, "g", None);
        assert_eq!(hub.presence(2), 3);
        assert_eq!(member.mailbox.recv().await.expect("presence"), wire::room::presence(3));
        assert_eq!(hub.presence(2), 3);
        assert!(member.mailbox.try_recv().is_none());
    }
}
