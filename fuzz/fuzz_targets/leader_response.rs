#![no_main]
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| drop(strait_broker::exercise::leader_response(data))
);

// Mutate as usual, then make every record batch's CRC valid again (see fix_batch_crcs).
libfuzzer_sys::fuzz_mutator!(
    |data: &mut [u8], size: usize, max_size: usize, _seed: u32| {
        let size = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
        strait_fuzz::fix_batch_crcs(&mut data[..size]);
        size
    }
);
