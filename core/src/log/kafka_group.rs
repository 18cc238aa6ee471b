//! Kafka consumer-group membership: which partitions of a topic this instance owns, among all
//! instances that joined the same group (Kafka's group protocol, KIP-62 / the "eager" rebalance).
//!
//! The group is used for **membership only**. Records are still read by [`super::kafka::KafkaLog`]'s
//! assigned readers from the offsets the view store holds (DESIGN §5), so a group member reads
//! exactly as a standalone consumer does. The member's own consumer pauses every partition it
//! is assigned (it never fetches) and commits nothing to Kafka.
//!
//! A background thread polls the member, which serves librdkafka's rebalance callbacks there:
//! - **revoke**: an [`AssignmentChange::Revoked`] is sent and the thread waits (up to the revoke
//!   timeout) for its `ack` to be dropped, so the owner can flush and commit before another
//!   member is given the partitions;
//! - **assign**: an [`AssignmentChange::Assigned`] is sent; the owner then claims the partitions'
//!   leases in the view store and seeks to the stored offsets.
//!
//! An instance that stalls past `session.timeout.ms` loses its partitions without a revoke
//! callback; the leases' epochs fence its later commits (see `store::leases`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::kafka::KafkaLogConfig;
use super::LogError;

/// A change of this member's partitions, from the group coordinator.
#[derive(Debug)]
pub enum AssignmentChange {
    /// These partitions are now this member's (the whole new assignment: the protocol is eager).
    Assigned(Vec<i32>),
    /// These partitions are being taken away. Commit what is held for them, stop reading them,
    /// then drop `ack`: the rebalance waits for that (up to the revoke timeout).
    Revoked {
        /// The partitions revoked (the whole former assignment).
        partitions: Vec<i32>,
        /// Dropped (or sent to) when the partitions are released.
        ack: std::sync::mpsc::SyncSender<()>,
    },
}

/// Settings of a group member.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`: every instance of one consumer joins the same group.
    pub group_id: String,
    /// Topic whose partitions the group splits.
    pub topic: String,
    /// `session.timeout.ms`: how long after its last heartbeat a silent member (crashed,
    /// killed, partitioned away) keeps its partitions. Kafka's range is 6 s–30 min by default.
    pub session_timeout: Duration,
    /// How long a revoke waits for the owner to commit before the rebalance goes on anyway.
    pub revoke_timeout: Duration,
}

struct MemberContext {
    topic: String,
    events: UnboundedSender<AssignmentChange>,
    revoke_timeout: Duration,
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut ps: Vec<i32> = tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect();
    ps.sort_unstable();
    ps
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.topic);
            tracing::info!(topic = %self.topic, ?partitions, "consumer group: partitions revoked");
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if self.events.send(AssignmentChange::Revoked { partitions, ack }).is_ok()
                && matches!(done.recv_timeout(self.revoke_timeout), Err(std::sync::mpsc::RecvTimeoutError::Timeout))
            {
                tracing::warn!(
                    timeout_ms = self.revoke_timeout.as_millis() as u64,
                    "consumer group: revoked partitions were not released in time; their uncommitted work will be fenced"
                );
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Membership only: the member never fetches (records are read from stored offsets).
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "consumer group: pausing the member's partitions failed");
                }
                let partitions = partitions_of(tpl, &self.topic);
                tracing::info!(topic = %self.topic, ?partitions, "consumer group: partitions assigned");
                let _ = self.events.send(AssignmentChange::Assigned(partitions));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "consumer group: rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A member of a Kafka consumer group; leaves the group when dropped.
pub struct GroupMembership {
    log: KafkaLogConfig,
    group: GroupConfig,
    instance_id: String,
    events: UnboundedReceiver<AssignmentChange>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A running member: its change stream, stop flag and polling thread.
type Member = (UnboundedReceiver<AssignmentChange>, Arc<AtomicBool>, JoinHandle<()>);

fn start_member(log: &KafkaLogConfig, group: &GroupConfig, instance_id: &str) -> Result<Member, LogError> {
    let (tx, events) = unbounded_channel();
    let context = MemberContext { topic: group.topic.clone(), events: tx, revoke_timeout: group.revoke_timeout };
    let session_ms = group.session_timeout.as_millis().max(1) as u64;
    let consumer: BaseConsumer<MemberContext> = ClientConfig::new()
        .set("bootstrap.servers", &log.brokers)
        .set("client.id", format!("{}-{instance_id}", log.client_id))
        .set("group.id", &group.group_id)
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", (session_ms / 3).max(1).to_string())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .create_with_context(context)
        .map_err(|e| LogError::Io { context: "Kafka: creating a group member".into(), source: std::io::Error::other(e.to_string()) })?;
    consumer
        .subscribe(&[&group.topic])
        .map_err(|e| LogError::Io { context: "Kafka: subscribing".into(), source: std::io::Error::other(e.to_string()) })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("group-{}", group.group_id))
        .spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                // Serves heartbeats' results and rebalance callbacks; no record is fetched.
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                    tracing::debug!(error = %e, "consumer group member");
                }
            }
            // Dropping the consumer leaves the group (close), so the others rebalance now
            // rather than after the session timeout.
            drop(consumer);
        })
        .map_err(|e| LogError::io("starting the group member thread", e))?;
    Ok((events, stop, thread))
}

impl GroupMembership {
    /// Joins `group.group_id` on the brokers of `log`, subscribed to `group.topic`. Assignments
    /// arrive through [`GroupMembership::try_next`] once the group has balanced (a few seconds).
    ///
    /// Errors: [`LogError::Io`] when the member cannot be created or subscribe.
    pub fn join(log: &KafkaLogConfig, group: &GroupConfig, instance_id: &str) -> Result<GroupMembership, LogError> {
        let (events, stop, thread) = start_member(log, group, instance_id)?;
        Ok(GroupMembership {
            log: log.clone(),
            group: group.clone(),
            instance_id: instance_id.to_string(),
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The group's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.group
    }

    /// The next assignment change, if one is waiting.
    pub fn try_next(&mut self) -> Option<AssignmentChange> {
        self.events.try_recv().ok()
    }

    /// Leaves the group and joins it again as a new member. The caller must have released its
    /// partitions first (no revoke is delivered for them). A remedy for a coordinator that
    /// keeps a dead member's assignment after expiring it (Tansu 0.6 re-sends the former
    /// assignment instead of the leader's new one); after a leave it forms the group afresh.
    ///
    /// Errors: [`LogError::Io`] when the new member cannot be created.
    pub async fn rejoin(&mut self) -> Result<(), LogError> {
        self.stop_member().await;
        let (events, stop, thread) = start_member(&self.log, &self.group, &self.instance_id)?;
        self.events = events;
        self.stop = stop;
        self.thread = Some(thread);
        Ok(())
    }

    async fn stop_member(&mut self) {
        if let Some(t) = self.signal_stop() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Tells the member thread to leave; returns the thread to join. Nobody answers revokes any
    /// more, so the leave goes through without waiting for an owner.
    fn signal_stop(&mut self) -> Option<JoinHandle<()>> {
        self.events.close();
        while self.events.try_recv().is_ok() {}
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()
    }

    /// Leaves the group now (the others rebalance at once), without blocking the runtime.
    pub async fn leave(mut self) {
        self.stop_member().await;
    }
}

impl Drop for GroupMembership {
    fn drop(&mut self) {
        if let Some(t) = self.signal_stop() {
            let _ = t.join();
        }
    }
}
