//! Payload encoding: JSON by default, bincode when a request carries
//! `Content-Type: application/bincode` (the reply mirrors it). Every encode and
//! decode in the system goes through here, so the binary format can be swapped
//! in one place.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ServiceError;

pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
pub const JSON: &str = "application/json";
pub const BINCODE: &str = "application/bincode";

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Json,
    Bincode,
}

impl Encoding {
    /// The encoding a message asks for through its `Content-Type` header.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Self {
        match headers.and_then(|h| h.get(CONTENT_TYPE_HEADER)) {
            Some(v) if v.as_str().eq_ignore_ascii_case(BINCODE) => Encoding::Bincode,
            _ => Encoding::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Bincode => BINCODE,
        }
    }

    /// Decodes a request or reply; a failure is a 400 that says what is wrong.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, ServiceError> {
        match self {
            Encoding::Json => {
                if payload.iter().all(u8::is_ascii_whitespace) {
                    return Err(ServiceError::bad_request(
                        "empty payload: expected a JSON object",
                    ));
                }
                serde_json::from_slice(payload)
                    .map_err(|e| ServiceError::bad_request(format!("invalid JSON: {e}")))
            }
            Encoding::Bincode => bincode::serde::decode_from_slice(payload, decode_config())
                .map(|(value, _)| value)
                .map_err(|e| ServiceError::bad_request(format!("invalid bincode: {e}"))),
        }
    }

    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, ServiceError> {
        match self {
            Encoding::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .map_err(|e| ServiceError::internal(format!("encoding JSON reply: {e}"))),
            Encoding::Bincode => bincode::serde::encode_to_vec(value, bincode_config())
                .map(Bytes::from)
                .map_err(|e| ServiceError::internal(format!("encoding bincode reply: {e}"))),
        }
    }
}

/// Largest value bincode decodes or encodes (the server's payload limit). Without
/// a limit, a length prefix in a crafted payload makes the decoder allocate
/// whatever it says, and an allocation of exabytes aborts the process (found by
/// the property test below).
pub const BINCODE_LIMIT: usize = 8 * 1024 * 1024;

/// bincode 2's standard configuration (what clients use), with [`BINCODE_LIMIT`].
fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<BINCODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

/// Most a bincode payload may make the decoder allocate (the largest payload
/// the shipped nats-server passes on). Without a limit a length prefix from the
/// wire (a few bytes claiming a string of petabytes) aborts the process.
const DECODE_LIMIT: usize = 8 * 1024 * 1024;

fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_length_prefix_is_a_400_not_an_allocation() {
        // A tuple whose string claims 2^62 bytes (varint: 0xFD + 8 bytes LE).
        let mut payload = vec![0xFD];
        payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let err = Encoding::Bincode
            .decode::<(String, u8)>(&payload)
            .unwrap_err();
        assert_eq!(err.code, 400, "{err:?}");
    }

    proptest::proptest! {
        /// Whatever bytes arrive, decoding answers a value or a 400, for both
        /// encodings, and what encodes decodes back to itself.
        #[test]
        fn any_bytes_decode_or_are_refused_with_a_400(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            for encoding in [Encoding::Json, Encoding::Bincode] {
                if let Err(e) = encoding.decode::<serde_json::Value>(&bytes) {
                    proptest::prop_assert_eq!(e.code, 400);
                }
                if let Err(e) = encoding.decode::<(String, u64, Vec<i32>)>(&bytes) {
                    proptest::prop_assert_eq!(e.code, 400);
                }
            }
        }

        #[test]
        fn what_encodes_decodes_back(value in (".{0,40}", proptest::prelude::any::<u64>(), proptest::collection::vec(proptest::prelude::any::<i32>(), 0..8))) {
            for encoding in [Encoding::Json, Encoding::Bincode] {
                let bytes = encoding.encode(&value).map_err(|e| proptest::test_runner::TestCaseError::fail(e.message))?;
                let back: (String, u64, Vec<i32>) = encoding.decode(&bytes).map_err(|e| proptest::test_runner::TestCaseError::fail(e.message))?;
                proptest::prop_assert_eq!(&back, &value);
            }
        }
    }
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: String,
        count: u32,
        note: Option<String>,
    }

    #[test]
    fn both_encodings_round_trip() {
        let value = Sample {
            id: "a".into(),
            count: 3,
            note: None,
        };
        for enc in [Encoding::Json, Encoding::Bincode] {
            let bytes = enc.encode(&value).unwrap();
            assert_eq!(enc.decode::<Sample>(&bytes).unwrap(), value);
        }
    }

    #[test]
    fn picks_encoding_from_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(Encoding::from_headers(Some(&headers)), Encoding::Json);
        headers.insert(CONTENT_TYPE_HEADER, BINCODE);
        assert_eq!(Encoding::from_headers(Some(&headers)), Encoding::Bincode);
        assert_eq!(Encoding::from_headers(None), Encoding::Json);
    }

    #[test]
    fn bad_json_is_a_400_naming_the_problem() {
        let err = Encoding::Json
            .decode::<Sample>(br#"{"id":"a"}"#)
            .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("missing field `count`"),
            "{}",
            err.message
        );
        let err = Encoding::Json
            .decode::<Sample>(br#"{"id":"a","count":"x"}"#)
            .unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let err = Encoding::Json.decode::<Sample>(b"").unwrap_err();
        assert!(err.message.contains("empty payload"), "{}", err.message);
        let err = Encoding::Bincode.decode::<Sample>(&[0xff]).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
