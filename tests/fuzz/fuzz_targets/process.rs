//! Arbitrary bytes, one record per line, through the decoder, the fold and the analytics of one
//! processor over the in-memory store: nothing may panic, and every record must end applied,
//! duplicate, late, erased (an erased customer's event from before its erasure) or rejected with
//! a reason code other than `processing_error` (which would mean a panic was caught inside the
//! fold).
#![no_main]

use std::sync::OnceLock;

use customer_pulse::config::Config;
use customer_pulse::processor::{InputRecord, Processor, ProcessorSettings};
use customer_pulse::store::Store;
use libfuzzer_sys::fuzz_target;

/// The integration tests' processor clock (tests/it/catalogue.rs), so the corpus replays alike.
const NOW_MS: i64 = 1_780_315_200_000;

fn settings() -> &'static ProcessorSettings {
    static SETTINGS: OnceLock<ProcessorSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let config = Config::parse(
            "[kafka]\nbrokers = \"fuzz\"\n[state]\npath = \"unused\"\n[input]\npartitions = 2\n",
            Vec::new(),
        )
        .expect("the fuzz config is valid");
        customer_pulse::pipeline::processor_settings(&config)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut processor = Processor::new(Store::in_memory(), settings().clone());
    for (offset, line) in data.split(|b| *b == b'\n').enumerate() {
        let record = InputRecord {
            source: "fuzz".into(),
            source_partition: 0,
            offset: offset as i64,
            stream: None,
            state_partition: None,
            key: None,
            payload: line.to_vec(),
            cut_from: None,
            append_time_ms: None,
        };
        let report = processor
            .process(&[record], NOW_MS)
            .expect("the memory store never fails");
        let settled = ["applied", "duplicate", "late", "erased", "rejected"]
            .iter()
            .map(|o| report.count(o))
            .sum::<u64>();
        assert_eq!(settled, 1, "one outcome per record: {:?}", report.events);
        assert!(
            !report.dead_letters.contains_key("processing_error"),
            "a panic was caught in the fold"
        );
    }
});
