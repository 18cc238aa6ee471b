//! Consumer-group membership of a speed-layer instance: following the group's assignment
//! changes (commit and release on revoke; claim and resume on assign) and adopting partitions
//! left orphaned by a coordinator that keeps a dead member's assignment.

use std::time::Duration;

use prism_core::log::kafka_group::{AssignmentChange, GroupMembership};
use prism_core::store::ViewStore;
use prism_core::time::now_ms;
use prism_core::view::View;

use crate::{telemetry, SpeedError, SpeedState};

impl<V: View> SpeedState<V> {
    /// Applies the group's pending assignment changes: on revoke, commit then release; on
    /// assign, claim and resume.
    pub(crate) async fn follow_group(&mut self, membership: &mut GroupMembership, store: &ViewStore) -> Result<(), SpeedError> {
        while let Some(change) = membership.try_next() {
            match change {
                AssignmentChange::Revoked { partitions, ack } => {
                    self.commit(store).await?;
                    self.release(&partitions);
                    drop(ack);
                }
                AssignmentChange::Assigned(partitions) => {
                    metrics::counter!(telemetry::REBALANCES_TOTAL).increment(1);
                    self.assign(&partitions, store).await?;
                }
            }
        }
        Ok(())
    }

    /// Partitions of the topic (`partitions` of them) that nobody owns although the group has
    /// been stable for `silence`: not assigned here, and their lease missing or not renewed for
    /// `silence` (its owner died). Compares wall clocks of the instances: keep `silence` well
    /// above their skew.
    async fn orphaned_partitions(&self, store: &ViewStore, partitions: i32, silence: Duration) -> Result<Vec<i32>, SpeedError> {
        if self.assigned_at.elapsed() < silence {
            return Ok(Vec::new());
        }
        let leases = store.leases(self.topic()).await?;
        let (now, silence_ms) = (now_ms(), silence.as_millis() as i64);
        Ok((0..partitions)
            .filter(|p| self.consumer.index_of(*p).is_none())
            .filter(|p| match leases.iter().find(|l| l.consumer == self.consumer_name && l.partition == *p) {
                Some(l) => now - l.renewed_at_ms > silence_ms,
                None => true,
            })
            .collect())
    }

    /// When partitions stay orphaned after the group balanced, leaves and rejoins the group so
    /// that the coordinator forms it afresh (see [`GroupMembership::rejoin`]). A no-op on a
    /// coordinator that expires dead members properly.
    pub(crate) async fn adopt_orphans(
        &mut self,
        membership: &mut GroupMembership,
        store: &ViewStore,
        partitions: i32,
    ) -> Result<(), SpeedError> {
        let silence = membership.config().session_timeout * 2;
        let orphans = self.orphaned_partitions(store, partitions, silence).await?;
        if orphans.is_empty() {
            return Ok(());
        }
        tracing::warn!(consumer = %self.consumer_name, ?orphans, silence_ms = silence.as_millis() as u64,
            "partitions have no live owner although the group is stable; rejoining the consumer group");
        metrics::counter!(telemetry::GROUP_REJOINS_TOTAL).increment(1);
        self.commit(store).await?;
        let owned = self.consumer.partitions();
        self.release(&owned);
        membership.rejoin().await?;
        Ok(())
    }
}
