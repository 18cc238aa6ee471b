//! What a batch-view chunk's segment is built from. The chunks themselves are
//! [`prism_core::chunk::Chunk`].

use std::collections::BTreeMap;

pub use prism_core::chunk::Chunk;

/// What a chunk's segment is built from: per log partition, the last offset of the committed
/// master-dataset files of the chunk. Archiving only appends higher offsets and compaction keeps
/// them, so a chunk whose inputs and covered range are unchanged holds the same events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkInputs {
    last_offsets: BTreeMap<i32, i64>,
}

impl ChunkInputs {
    /// Records a file of `partition` whose last offset is `last_offset`.
    pub fn add_file(&mut self, partition: i32, last_offset: i64) {
        let e = self.last_offsets.entry(partition).or_insert(last_offset);
        *e = (*e).max(last_offset);
    }

    /// The stored form: `partition:last_offset` pairs, comma-separated, by partition.
    pub fn encode(&self) -> String {
        self.last_offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_encode_by_partition() {
        let mut inputs = ChunkInputs::default();
        inputs.add_file(1, 10);
        inputs.add_file(0, 7);
        inputs.add_file(1, 4);
        assert_eq!(inputs.encode(), "0:7,1:10");
    }
}
