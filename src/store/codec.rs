//! The on-disk encoding: a version byte, then a postcard body. What is on disk outlives the code,
//! so a change to a stored type's layout must add a new version and keep decoding the old ones;
//! the golden-bytes test below fails the build when the layout changes by accident.

use crate::fold::CustomerState;

use super::OutboxRecord;

const CUSTOMER_V1: u8 = 1;
const OUTBOX_V1: u8 = 1;

pub fn encode_customer(state: &CustomerState) -> Vec<u8> {
    encode(CUSTOMER_V1, state)
}

pub fn decode_customer(bytes: &[u8]) -> Result<CustomerState, String> {
    decode(CUSTOMER_V1, bytes)
}

pub fn encode_outbox(record: &OutboxRecord) -> Vec<u8> {
    encode(OUTBOX_V1, record)
}

pub fn decode_outbox(bytes: &[u8]) -> Result<OutboxRecord, String> {
    decode(OUTBOX_V1, bytes)
}

fn encode<T: serde::Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serialising these plain structs into a Vec cannot fail: no maps with non-string keys,
    // no sequences of unknown length.
    postcard::to_io(value, &mut out).expect("postcard encodes plain structs");
    out
}

fn decode<T: serde::de::DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((v, body)) if *v == version => {
            postcard::from_bytes(body).map_err(|e| format!("version {v} body: {e}"))
        }
        Some((v, _)) => Err(format!(
            "unknown encoding version {v} (this build reads {version})"
        )),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::fold::{Lifecycle, OpenComplaint, SeenEvent, Subscription};

    fn sample() -> CustomerState {
        CustomerState {
            customer_id: "c-1".into(),
            registered_at: Some(1_000),
            lifecycle: Lifecycle::Active,
            first_event_at: 1_000,
            last_event_at: 90_000_000,
            purchase_days: vec![0, 1],
            orders: 2,
            revenue_minor: 1_500,
            margin_minor: -20,
            open_complaints: vec![OpenComplaint {
                complaint_id: "k".into(),
                category: "billing".into(),
                severity: Severity::High,
                opened_at: 5,
            }],
            subscription: Subscription::Cancelled,
            seen: vec![SeenEvent {
                event_id: "e".into(),
                occurred_at: 1_000,
            }],
            ..CustomerState::default()
        }
    }

    #[test]
    fn customer_round_trips() {
        let state = sample();
        assert_eq!(decode_customer(&encode_customer(&state)), Ok(state));
    }

    #[test]
    fn version_one_layout_is_pinned() {
        // Written once from the layout of version 1 (UPDATE_GOLDEN=1) and its head checked by hand
        // against the postcard spec: 01 (version), 03 63 2d 31 ("c-1", length-prefixed),
        // 01 d0 0f (Some(1000): zigzag 2000 as a varint), 00 00 (two Nones), 01 (Active).
        // If this fails, the stored layout changed: add CUSTOMER_V2 and keep reading V1.
        let golden_path =
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("tests/golden/customer_v1.hex");
        let encoded: String = encode_customer(&sample())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden_path, &encoded).expect("golden file is writable");
        }
        let golden = std::fs::read_to_string(&golden_path).expect("golden file exists");
        assert_eq!(encoded, golden.trim());
    }

    #[test]
    fn unknown_version_and_garbage_are_errors_not_panics() {
        assert!(decode_customer(&[]).is_err());
        assert!(decode_customer(&[9, 1, 2])
            .unwrap_err()
            .contains("version 9"));
        assert!(decode_customer(&[CUSTOMER_V1, 0xff, 0xff]).is_err());
    }
}
