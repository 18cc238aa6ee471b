//! Finding, after a crash, the feed's trades the log already holds past the checkpoint, and
//! completing an append that reached some partitions and not others (exactly-once into
//! `prism.quotes`).
//!
//! One append of a trading day goes to every partition its symbols hash to, and no log makes
//! that atomic: the embedded log writes partition after partition, and a Kafka producer sends
//! a batch per partition. A crash in between leaves a day whose trades are in partition 0 and
//! not in partition 1. Within one partition the log keeps order (Kafka's guarantee, and the
//! embedded log's), so what landed there is a prefix of that partition's share of the feed.
//! [`recover`] therefore looks at each partition on its own: the highest `prism.feed.seq`
//! found there past the checkpoint says which of that partition's trades are in, and the
//! trades each partition misses below the highest sequence number found anywhere are
//! appended again ([`Landed::missing`]) before the checkpoint moves past them.

use prism_core::event::QUOTES_TOPIC;
use prism_core::log::partitioner::partition_for_key;
use prism_core::log::EventLog;

use crate::append::for_each_after;

use super::{FeedError, FEED_ID_HEADER, FEED_SEQ_HEADER};

/// The feed's records found past a checkpoint's log end offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landed {
    /// Per partition: one past the highest sequence number found there, or the checkpoint's
    /// `next_seq` when none was.
    next_by_partition: Vec<i64>,
    /// How many of the feed's records were found (none is counted in the checkpoint yet).
    pub records: i64,
}

impl Landed {
    /// One past the highest sequence number found in any partition (the checkpoint's
    /// `next_seq` when none was found): every trade below it is in the log once the
    /// [`Landed::missing`] ones are appended again.
    pub(crate) fn next_seq(&self) -> i64 {
        self.next_by_partition.iter().copied().max().unwrap_or(0)
    }

    /// True when trade `seq` with record key `key` belongs below [`Landed::next_seq`] but did
    /// not reach its partition.
    pub(crate) fn missing(&self, seq: i64, key: &[u8]) -> bool {
        let partitions = self.next_by_partition.len() as i32;
        let p = partition_for_key(key, partitions) as usize;
        seq < self.next_seq() && self.next_by_partition.get(p).is_some_and(|&next| seq >= next)
    }
}

/// Reads this feed's records (`feed_id`) from `from` (the checkpoint's end offsets per
/// partition; missing partitions from 0) to the end of `prism.quotes`
/// ([`for_each_after`]). `next_seq` is the checkpoint's: every trade below it is in the log.
///
/// Errors: [`FeedError::Log`], as [`for_each_after`].
pub(crate) async fn recover<L: EventLog>(log: &L, feed_id: &str, from: &[i64], next_seq: i64) -> Result<Landed, FeedError> {
    let partitions = log.end_offsets(QUOTES_TOPIC).await?.len();
    let mut landed = Landed { next_by_partition: vec![next_seq; partitions], records: 0 };
    for_each_after(log, QUOTES_TOPIC, from, |r| {
        if r.header(FEED_ID_HEADER) != Some(feed_id.as_bytes()) {
            return;
        }
        let seq = r.header(FEED_SEQ_HEADER).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<i64>().ok());
        let slot = usize::try_from(r.partition).ok().and_then(|p| landed.next_by_partition.get_mut(p));
        if let (Some(seq), Some(next)) = (seq, slot) {
            landed.records += 1;
            *next = (*next).max(seq + 1);
        }
    })
    .await?;
    Ok(landed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(partition: i32, of: i32) -> Vec<u8> {
        (0..1000).map(|i| format!("S{i}").into_bytes()).find(|k| partition_for_key(k, of) == partition).expect("a key")
    }

    #[test]
    fn a_partition_behind_the_others_misses_its_trades_up_to_the_highest_seq() {
        let landed = Landed { next_by_partition: vec![40, 25], records: 15 };
        let (k0, k1) = (key_in(0, 2), key_in(1, 2));
        assert_eq!(landed.next_seq(), 40);
        assert!(!landed.missing(30, &k0), "partition 0 holds up to 39");
        assert!(landed.missing(30, &k1), "partition 1 stopped at 24");
        assert!(!landed.missing(24, &k1), "below partition 1's own next");
        assert!(!landed.missing(40, &k1), "at the highest: the feed's loop sends it");
        let none = Landed { next_by_partition: vec![7, 7], records: 0 };
        assert_eq!(none.next_seq(), 7);
        assert!(!none.missing(7, &k0) && !none.missing(6, &k1));
    }
}
