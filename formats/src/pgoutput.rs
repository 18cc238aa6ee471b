//! A decoder for PostgreSQL's `pgoutput` logical replication messages, protocol version 1
//! (PostgreSQL documentation, "Logical Replication Message Formats", §55.9 in PostgreSQL 15),
//! for the CDC source (issue 9). The replication connection itself (`START_REPLICATION … LOGICAL
//! … (proto_version '1', publication_names …)`, the `XLogData` and keepalive framing) belongs to
//! the connection crate; this module turns the bytes of one `XLogData` payload into a
//! [`Message`].
//!
//! Integers are big-endian; strings are NUL-terminated UTF-8; timestamps are microseconds since
//! 2000-01-01 00:00:00 UTC (converted here to UTC ms since the Unix epoch). Decoding never
//! panics: a short or malformed message is a [`DecodeError`] naming what is wrong and where.

/// A Log Sequence Number: a byte position in the write-ahead log.
pub type Lsn = u64;

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// One `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: a transaction begins.
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// Commit time, UTC ms.
        commit_ts_ms: i64,
        /// Transaction id.
        xid: u32,
    },
    /// `C`: the transaction commits.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// LSN just past the commit record (the position to confirm once applied).
        end_lsn: Lsn,
        /// Commit time, UTC ms.
        commit_ts_ms: i64,
    },
    /// `O`: the changes come from another node.
    Origin {
        /// LSN of the commit on the origin server.
        lsn: Lsn,
        /// Origin name.
        name: String,
    },
    /// `R`: a table's shape, sent before its first change in a session and after it changes.
    Relation(Relation),
    /// `Y`: a data type's name (sent for types outside `pg_catalog`).
    Type {
        /// Type OID.
        oid: u32,
        /// Schema.
        namespace: String,
        /// Name.
        name: String,
    },
    /// `I`: a row inserted.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The new row.
        new: Vec<Column>,
    },
    /// `U`: a row updated. `old` is the old key (`K`: replica identity `DEFAULT` or `INDEX`,
    /// sent only when a key column changed) or the whole old row (`O`: replica identity
    /// `FULL`); absent otherwise.
    Update {
        /// Relation OID.
        relation: u32,
        /// The old key or row, when sent.
        old: Option<OldTuple>,
        /// The new row (unchanged TOASTed values are [`Column::UnchangedToast`]).
        new: Vec<Column>,
    },
    /// `D`: a row deleted; the old key (`K`) or the whole old row (`O`).
    Delete {
        /// Relation OID.
        relation: u32,
        /// The old key or row.
        old: OldTuple,
    },
    /// `T`: tables truncated.
    Truncate {
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// `M`: a logical decoding message (`pg_logical_emit_message`).
    LogicalMessage {
        /// Emitted inside a transaction.
        transactional: bool,
        /// Its LSN.
        lsn: Lsn,
        /// Prefix.
        prefix: String,
        /// Content.
        content: Vec<u8>,
    },
}

/// A table's shape (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID (the key of later row messages).
    pub oid: u32,
    /// Schema (`pg_catalog` is sent as an empty string).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    /// Columns, in order.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`; −1 when none).
    pub type_modifier: i32,
}

/// An old row image: the key columns only (`K`), or the whole row (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Replica identity `DEFAULT`/`INDEX`: key columns set, the others [`Column::Null`].
    Key(Vec<Column>),
    /// Replica identity `FULL`: every column.
    Full(Vec<Column>),
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// SQL NULL (`n`).
    Null,
    /// A TOASTed value that did not change and is not sent (`u`).
    UnchangedToast,
    /// The value in the type's text output format (`t`).
    Text(String),
    /// The value in the type's binary format (`b`, with the `binary` option).
    Binary(Vec<u8>),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended early.
    #[error("pgoutput message {kind:?} ends at byte {at}, {need} more needed")]
    Short {
        /// Message type byte.
        kind: char,
        /// Where it ended.
        at: usize,
        /// Bytes missing.
        need: usize,
    },
    /// An unknown message type or tuple/column tag.
    #[error("pgoutput message {kind:?}: unexpected tag {tag:?} at byte {at}")]
    Tag {
        /// Message type byte.
        kind: char,
        /// The tag found.
        tag: char,
        /// Where.
        at: usize,
    },
    /// A string or text value that is not UTF-8, or a string without its NUL.
    #[error("pgoutput message {kind:?}: bad string at byte {at}: {reason}")]
    Text {
        /// Message type byte.
        kind: char,
        /// Where.
        at: usize,
        /// What is wrong.
        reason: String,
    },
    /// Bytes left over after a complete message.
    #[error("pgoutput message {kind:?}: {extra} bytes after its end")]
    Trailing {
        /// Message type byte.
        kind: char,
        /// How many.
        extra: usize,
    },
    /// No bytes at all.
    #[error("empty pgoutput message")]
    Empty,
}

/// Decodes one `pgoutput` message (the payload of an `XLogData`). Errors: [`DecodeError`].
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&first, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let kind = first as char;
    let mut r = Reader { bytes, at: 1, kind };
    let message = match kind {
        'B' => Message::Begin { final_lsn: r.u64()?, commit_ts_ms: ts_ms(r.i64()?), xid: r.u32()? },
        'C' => {
            let _flags = r.u8()?;
            Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_ts_ms: ts_ms(r.i64()?) }
        }
        'O' => Message::Origin { lsn: r.u64()?, name: r.string()? },
        'R' => {
            let oid = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()? as char;
            let n = r.i16()?.max(0) as usize;
            let mut columns = Vec::with_capacity(n.min(1_600));
            for _ in 0..n {
                columns.push(RelationColumn { key: r.u8()? & 1 == 1, name: r.string()?, type_oid: r.u32()?, type_modifier: r.i32()? });
            }
            Message::Relation(Relation { oid, namespace, name, replica_identity, columns })
        }
        'Y' => Message::Type { oid: r.u32()?, namespace: r.string()?, name: r.string()? },
        'I' => {
            let relation = r.u32()?;
            r.expect_tag(&['N'])?;
            Message::Insert { relation, new: r.tuple()? }
        }
        'U' => {
            let relation = r.u32()?;
            let old = match r.expect_tag(&['K', 'O', 'N'])? {
                'K' => {
                    let old = OldTuple::Key(r.tuple()?);
                    r.expect_tag(&['N'])?;
                    Some(old)
                }
                'O' => {
                    let old = OldTuple::Full(r.tuple()?);
                    r.expect_tag(&['N'])?;
                    Some(old)
                }
                _ => None,
            };
            Message::Update { relation, old, new: r.tuple()? }
        }
        'D' => {
            let relation = r.u32()?;
            let old = match r.expect_tag(&['K', 'O'])? {
                'K' => OldTuple::Key(r.tuple()?),
                _ => OldTuple::Full(r.tuple()?),
            };
            Message::Delete { relation, old }
        }
        'T' => {
            let n = r.u32()? as usize;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(65_536));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { cascade: options & 1 == 1, restart_identity: options & 2 == 2, relations }
        }
        'M' => {
            let transactional = r.u8()? & 1 == 1;
            let lsn = r.u64()?;
            let prefix = r.string()?;
            let len = r.u32()? as usize;
            Message::LogicalMessage { transactional, lsn, prefix, content: r.take(len)?.to_vec() }
        }
        tag => return Err(DecodeError::Tag { kind, tag, at: 0 }),
    };
    if r.at < bytes.len() {
        return Err(DecodeError::Trailing { kind, extra: bytes.len() - r.at });
    }
    Ok(message)
}

/// PostgreSQL microseconds since 2000-01-01 → UTC ms since the Unix epoch.
fn ts_ms(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_US).div_euclid(1_000)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: char,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(DecodeError::Short {
            kind: self.kind,
            at: self.bytes.len(),
            need: n.saturating_sub(self.bytes.len().saturating_sub(self.at)),
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let start = self.at;
        let rest = &self.bytes[start.min(self.bytes.len())..];
        let nul = rest.iter().position(|b| *b == 0).ok_or(DecodeError::Text {
            kind: self.kind,
            at: start,
            reason: "no terminating NUL".into(),
        })?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|e| DecodeError::Text { kind: self.kind, at: start, reason: e.to_string() })?
            .to_string();
        self.at = start + nul + 1;
        Ok(s)
    }

    fn expect_tag(&mut self, allowed: &[char]) -> Result<char, DecodeError> {
        let at = self.at;
        let tag = self.u8()? as char;
        if allowed.contains(&tag) {
            Ok(tag)
        } else {
            Err(DecodeError::Tag { kind: self.kind, tag, at })
        }
    }

    fn tuple(&mut self) -> Result<Vec<Column>, DecodeError> {
        let n = self.i16()?.max(0) as usize;
        let mut columns = Vec::with_capacity(n.min(1_600));
        for _ in 0..n {
            let at = self.at;
            columns.push(match self.u8()? as char {
                'n' => Column::Null,
                'u' => Column::UnchangedToast,
                't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Column::Text(
                        std::str::from_utf8(bytes)
                            .map_err(|e| DecodeError::Text { kind: self.kind, at: at + 5, reason: e.to_string() })?
                            .to_string(),
                    )
                }
                'b' => {
                    let len = self.u32()? as usize;
                    Column::Binary(self.take(len)?.to_vec())
                }
                tag => return Err(DecodeError::Tag { kind: self.kind, tag, at }),
            });
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds messages as the PostgreSQL documentation lays them out.
    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Bytes {
        fn tag(mut self, c: char) -> Self {
            self.0.push(c as u8);
            self
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn string(mut self, s: &str) -> Self {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, s: &str) -> Self {
            let mut b = self.tag('t').u32(s.len() as u32);
            b.0.extend(s.as_bytes());
            b
        }
    }

    /// 2024-01-01T00:00:00Z in PostgreSQL microseconds.
    const PG_2024_US: i64 = 757_382_400_000_000;

    #[test]
    fn decodes_a_transaction() {
        let begin = Bytes::default().tag('B').u64(0x16B_3748).i64(PG_2024_US + 1_500).u32(742);
        assert_eq!(decode(&begin.0), Ok(Message::Begin { final_lsn: 0x16B_3748, commit_ts_ms: 1_704_067_200_001, xid: 742 }));
        let relation = Bytes::default()
            .tag('R')
            .u32(16_385)
            .string("public")
            .string("flights")
            .u8(b'd')
            .i16(2)
            .u8(1)
            .string("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .string("dest")
            .u32(25)
            .i32(-1);
        let Ok(Message::Relation(r)) = decode(&relation.0) else { panic!("a relation") };
        assert_eq!((r.oid, r.namespace.as_str(), r.name.as_str(), r.replica_identity), (16_385, "public", "flights", 'd'));
        assert_eq!(
            r.columns.iter().map(|c| (c.key, c.name.as_str(), c.type_oid)).collect::<Vec<_>>(),
            [(true, "id", 23), (false, "dest", 25)]
        );
        let insert = Bytes::default().tag('I').u32(16_385).tag('N').i16(2).text("1").tag('n');
        assert_eq!(decode(&insert.0), Ok(Message::Insert { relation: 16_385, new: vec![Column::Text("1".into()), Column::Null] }));
        let commit = Bytes::default().tag('C').u8(0).u64(0x16B_3748).u64(0x16B_3778).i64(PG_2024_US);
        assert_eq!(decode(&commit.0), Ok(Message::Commit { commit_lsn: 0x16B_3748, end_lsn: 0x16B_3778, commit_ts_ms: 1_704_067_200_000 }));
    }

    #[test]
    fn decodes_updates_deletes_and_truncates_under_each_replica_identity() {
        // Default identity, key unchanged: no old tuple; an unchanged TOASTed column.
        let update = Bytes::default().tag('U').u32(7).tag('N').i16(2).text("1").tag('u');
        assert_eq!(
            decode(&update.0),
            Ok(Message::Update { relation: 7, old: None, new: vec![Column::Text("1".into()), Column::UnchangedToast] })
        );
        // A primary-key change: the old key first.
        let key_change = Bytes::default().tag('U').u32(7).tag('K').i16(2).text("1").tag('n').tag('N').i16(2).text("2").text("x");
        assert_eq!(
            decode(&key_change.0),
            Ok(Message::Update {
                relation: 7,
                old: Some(OldTuple::Key(vec![Column::Text("1".into()), Column::Null])),
                new: vec![Column::Text("2".into()), Column::Text("x".into())],
            })
        );
        // REPLICA IDENTITY FULL: the whole old row.
        let full = Bytes::default().tag('U').u32(7).tag('O').i16(1).text("a").tag('N').i16(1).text("b");
        assert!(matches!(decode(&full.0), Ok(Message::Update { old: Some(OldTuple::Full(_)), .. })));
        let delete = Bytes::default().tag('D').u32(7).tag('K').i16(2).text("2").tag('n');
        assert_eq!(
            decode(&delete.0),
            Ok(Message::Delete { relation: 7, old: OldTuple::Key(vec![Column::Text("2".into()), Column::Null]) })
        );
        let truncate = Bytes::default().tag('T').u32(2).u8(3).u32(7).u32(8);
        assert_eq!(decode(&truncate.0), Ok(Message::Truncate { cascade: true, restart_identity: true, relations: vec![7, 8] }));
        let binary = Bytes::default().tag('I').u32(7).tag('N').i16(1).tag('b').u32(2).u8(0xFF).u8(0);
        assert_eq!(decode(&binary.0), Ok(Message::Insert { relation: 7, new: vec![Column::Binary(vec![0xFF, 0])] }));
    }

    #[test]
    fn decodes_origin_type_and_logical_messages() {
        let origin = Bytes::default().tag('O').u64(99).string("node-a");
        assert_eq!(decode(&origin.0), Ok(Message::Origin { lsn: 99, name: "node-a".into() }));
        let ty = Bytes::default().tag('Y').u32(16_400).string("public").string("mood");
        assert_eq!(decode(&ty.0), Ok(Message::Type { oid: 16_400, namespace: "public".into(), name: "mood".into() }));
        let mut message = Bytes::default().tag('M').u8(1).u64(5).string("prism").u32(2);
        message.0.extend(b"hi");
        assert_eq!(
            decode(&message.0),
            Ok(Message::LogicalMessage { transactional: true, lsn: 5, prefix: "prism".into(), content: b"hi".to_vec() })
        );
    }

    #[test]
    fn malformed_messages_are_errors_that_say_where() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(decode(b"Z"), Err(DecodeError::Tag { tag: 'Z', .. })));
        assert!(matches!(decode(&Bytes::default().tag('B').u64(1).0), Err(DecodeError::Short { kind: 'B', .. })));
        let bad_tag = Bytes::default().tag('I').u32(7).tag('X');
        assert!(matches!(decode(&bad_tag.0), Err(DecodeError::Tag { kind: 'I', tag: 'X', at: 5 })));
        let no_nul = Bytes::default().tag('O').u64(1).tag('a');
        assert!(matches!(decode(&no_nul.0), Err(DecodeError::Text { .. })));
        let trailing = Bytes::default().tag('B').u64(1).i64(0).u32(1).u8(0);
        assert_eq!(decode(&trailing.0), Err(DecodeError::Trailing { kind: 'B', extra: 1 }));
        let huge_text = Bytes::default().tag('I').u32(7).tag('N').i16(1).tag('t').u32(u32::MAX);
        assert!(matches!(decode(&huge_text.0), Err(DecodeError::Short { .. })));
    }

    proptest! {
        /// Any bytes are decoded or refused, never a panic (the CDC source reads a network).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        /// Any bytes after a valid message type byte are decoded or refused, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(kind in prop::sample::select(vec![b'B', b'C', b'O', b'R', b'Y', b'I', b'U', b'D', b'T', b'M']),
                                         body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![kind];
            bytes.extend(body);
            let _ = decode(&bytes);
        }
    }
}
