//! Which archived records each view type is computed from ([`BatchView`]): the batch job reads a
//! view's topic from the master dataset and folds each record with the view's own code (key,
//! event time, contribution, monoid), as the speed layer does from the log.

use prism_core::event::{AccessEvent, EventError, Quote};
use prism_core::view::access::{access_key, AccessView, KeyedAccess};
use prism_core::view::changes::ChangesView;
use prism_core::view::ohlcv::OhlcvView;
use prism_core::view::View;

use crate::master::{CdcRecord, MasterRecord};

/// A view the batch layer can build from the master dataset.
pub trait BatchView: View {
    /// The archived records of the view's source topic.
    type Record: MasterRecord;
    /// Calls `f` with the view's event of an archived record.
    ///
    /// Errors: [`EventError`] when the view refuses the record (the speed layer dead-letters the
    /// same record; the batch job skips it).
    fn with_event<T>(&self, record: &Self::Record, f: impl FnOnce(&Self::Event) -> T) -> Result<T, EventError>;
}

impl BatchView for OhlcvView {
    type Record = Quote;

    fn with_event<T>(&self, record: &Quote, f: impl FnOnce(&Quote) -> T) -> Result<T, EventError> {
        Ok(f(record))
    }
}

impl BatchView for AccessView {
    type Record = AccessEvent;

    fn with_event<T>(&self, record: &AccessEvent, f: impl FnOnce(&KeyedAccess) -> T) -> Result<T, EventError> {
        let key = access_key(&record.host, record.status_class());
        Ok(f(&KeyedAccess { event: record.clone(), key }))
    }
}

impl BatchView for ChangesView {
    type Record = CdcRecord;

    fn with_event<T>(&self, record: &CdcRecord, f: impl FnOnce(&<ChangesView as View>::Event) -> T) -> Result<T, EventError> {
        // The view parses the envelope as the log held it (the archive is lossless).
        let value = serde_json::to_vec(&record.envelope).map_err(|e| EventError::Malformed(e.to_string()))?;
        let event = self.parse_record(Some(record.key.as_bytes()), &value)?;
        Ok(f(&event))
    }
}
