//! List replies: one page of stored records and the cursor of the next page.
//!
//! Services keep each record's reply JSON in sled, so a JSON page is spliced
//! from the stored bytes without decoding them; only a bincode reply decodes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use shop_nats::{Encoding, ServiceError};

use crate::{HandlerResult, Request};

/// A list reply: `{"items":[...],"next_cursor":...}`; `next_cursor` is `None`
/// on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A page whose items are the stored reply JSON of each record.
#[derive(Debug, Clone, Default)]
pub struct StoredPage {
    pub items: Vec<Bytes>,
    pub next_cursor: Option<String>,
}

impl StoredPage {
    /// The reply in the request's encoding. `T` is the record type (for
    /// bincode) and `what` names it in the error when a stored record is corrupt.
    pub fn encode<T>(self, request: &Request, what: &str) -> HandlerResult
    where
        T: Serialize + DeserializeOwned,
    {
        match request.encoding {
            Encoding::Json => self.json(),
            Encoding::Bincode => {
                let items = self
                    .items
                    .iter()
                    .map(|item| {
                        serde_json::from_slice::<T>(item).map_err(|e| {
                            ServiceError::internal(format!("corrupt stored {what}: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                request.encode(&Page {
                    items,
                    next_cursor: self.next_cursor,
                })
            }
        }
    }

    fn json(&self) -> HandlerResult {
        let cursor = serde_json::to_vec(&self.next_cursor)
            .map_err(|e| ServiceError::internal(format!("encoding a cursor: {e}")))?;
        let mut out = BytesMut::with_capacity(
            32 + cursor.len() + self.items.iter().map(|i| i.len() + 1).sum::<usize>(),
        );
        out.put_slice(b"{\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(item);
        }
        out.put_slice(b"],\"next_cursor\":");
        out.put_slice(&cursor);
        out.put_u8(b'}');
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Item {
        id: String,
    }

    fn request(encoding: Encoding) -> Request {
        Request {
            subject: "x.list".into(),
            headers: None,
            payload: Bytes::new(),
            encoding,
            trace: shop_nats::TraceContext::new_root(),
            caller: None,
        }
    }

    fn page(cursor: Option<&str>) -> StoredPage {
        StoredPage {
            items: vec![
                Bytes::from_static(br#"{"id":"a"}"#),
                Bytes::from_static(br#"{"id":"b"}"#),
            ],
            next_cursor: cursor.map(str::to_string),
        }
    }

    #[test]
    fn json_page_is_the_stored_items_spliced() {
        let out = page(Some("b"))
            .encode::<Item>(&request(Encoding::Json), "item")
            .unwrap();
        let parsed: Page<Item> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(parsed.items[1].id, "b");
        assert_eq!(parsed.next_cursor.as_deref(), Some("b"));
        let last = page(None)
            .encode::<Item>(&request(Encoding::Json), "item")
            .unwrap();
        assert!(std::str::from_utf8(&last)
            .unwrap()
            .ends_with(r#""next_cursor":null}"#));
    }

    #[test]
    fn bincode_page_round_trips_and_corrupt_items_are_500() {
        let req = request(Encoding::Bincode);
        let out = page(None).encode::<Item>(&req, "item").unwrap();
        let parsed: Page<Item> = Encoding::Bincode.decode(&out).unwrap();
        assert_eq!(parsed.items[0].id, "a");
        let corrupt = StoredPage {
            items: vec![Bytes::from_static(b"{not json")],
            next_cursor: None,
        };
        let err = corrupt.encode::<Item>(&req, "item").unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            err.message.contains("corrupt stored item"),
            "{}",
            err.message
        );
    }
}
