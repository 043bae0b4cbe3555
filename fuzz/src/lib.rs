//! Helpers shared by strait's fuzz targets.

/// Bytes before a batch's `batchLength` ends: `baseOffset` (8) and `batchLength` (4).
const LOG_OVERHEAD_BYTES: usize = 12;
/// Where `magic` sits in a batch; v2 is the only format the broker accepts.
const MAGIC_AT: usize = 16;
/// Where the CRC-32C sits; it covers everything from the attributes on.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
/// The smallest `batchLength` of a v2 batch (its 61-byte header less the log overhead).
const MIN_BATCH_LENGTH: usize = 49;

/// Rewrites the CRC of everything in `data` that looks like a v2 record batch (magic 2 and a
/// `batchLength` that fits in what is left), scanning left to right and skipping over each batch
/// it fixes.
///
/// Every decoder behind a record set checks the CRC first, so without this nearly every mutation
/// of a batch's attributes, records or compressed payload is refused at the CRC and the fuzzer
/// never reaches the record decoder or the decompressors. Used from a custom mutator, so the
/// inputs libFuzzer keeps carry valid CRCs and replay the same way in `cargo test`.
pub fn fix_batch_crcs(data: &mut [u8]) {
    let mut at = 0;
    while at + ATTRIBUTES_AT <= data.len() {
        let rest = &data[at..];
        let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let total = usize::try_from(batch_length)
            .ok()
            .filter(|&len| len >= MIN_BATCH_LENGTH)
            .map(|len| LOG_OVERHEAD_BYTES + len);
        match total {
            Some(total) if rest[MAGIC_AT] == 2 && total <= rest.len() => {
                let crc = crc32c::crc32c(&rest[ATTRIBUTES_AT..total]);
                data[at + CRC_AT..at + ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
                at += total;
            }
            _ => at += 1,
        }
    }
}
