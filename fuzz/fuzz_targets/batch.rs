//! Record batch parsing and validation: what the produce path runs on a partition's records
//! (`batch::split_produced` in the log, the codec's decoding with decompression for a
//! compacted topic's key check) and what a follower runs on fetched batches
//! (`batch::split` with the stored-batch rule).
//!
//! The first input byte picks a mode; bit 0 set recomputes the CRC-32C of every framed batch
//! first, so the fuzzer gets past the checksum into the header checks and the decompressors.
#![no_main]

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;
use oxbow_broker::log::batch::{self, CountRule, ProducedBatch};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let mut records = records.to_vec();
    if mode & 1 != 0 {
        oxbow_fuzz::fix_crcs(&mut records);
    }
    let produced = batch::split_produced(&records, usize::MAX);
    let stored = batch::split(&records, usize::MAX, CountRule::Stored);
    if let Ok(produced) = &produced {
        assert_eq!(
            stored.as_ref().ok(),
            Some(produced),
            "a batch a producer may send is also a valid stored batch"
        );
        check_tiling(&records, produced, CountRule::Produced);
    }
    if let Ok(stored) = &stored {
        check_tiling(&records, stored, CountRule::Stored);
        for found in stored {
            let bytes = &records[found.start..found.start + found.header.size()];
            let _ = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes));
        }
    }
    // A compacted topic decodes the records before the log validates them.
    let _ = RecordBatchDecoder::decode_all(&mut Bytes::from(records));
});

/// Validated batches cover the records exactly, back to back, each valid on its own.
fn check_tiling(records: &[u8], batches: &[ProducedBatch], rule: CountRule) {
    let mut at = 0;
    for found in batches {
        assert_eq!(found.start, at, "batches are back to back");
        let end = found.start + found.header.size();
        let header = batch::check_batch(&records[found.start..end], rule)
            .expect("a batch that split accepted validates on its own");
        assert_eq!(header, found.header);
        at = end;
    }
    assert_eq!(at, records.len(), "the batches cover every byte");
}
