//! Strategies for property tests of request decoding and validation: any JSON,
//! and JSON objects that use a request type's field names with any values, so
//! that validators (not only the decoder) see the awkward inputs.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Awkward text: empty, spaces, subject wildcards, control characters,
/// non-ASCII, long runs, and anything else.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("a.b".to_string()),
        Just("*".to_string()),
        Just(">".to_string()),
        Just("\u{0}".to_string()),
        Just("ünï ✓".to_string()),
        "[a-zA-Z0-9_.@-]{1,80}",
        "x{60,300}",
        any::<String>(),
    ]
}

/// Any JSON value, nested a few levels.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a field holds, as its request type's schema says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Integer,
    Text,
    Other,
}

/// Awkward integers: zero, one, minus one, the extremes, small and any.
pub fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        -1000i64..1000,
        any::<i64>()
    ]
}

/// A value for a field of `kind`: mostly of that kind (so decoding succeeds
/// and the validator runs), sometimes anything.
pub fn field_value(kind: FieldKind) -> impl Strategy<Value = Value> {
    let typed = match kind {
        FieldKind::Integer => integer().prop_map(Value::from).boxed(),
        FieldKind::Text => text().prop_map(Value::String).boxed(),
        FieldKind::Other => json().boxed(),
    };
    prop_oneof![8 => typed, 1 => Just(Value::Null), 1 => json()]
}

/// A JSON object with most of `fields` (each with a [`field_value`] of its
/// kind) and sometimes a field nobody asked for.
pub fn object_with(fields: Vec<(String, FieldKind)>) -> impl Strategy<Value = Value> {
    let values: Vec<_> = fields
        .iter()
        .map(|(_, kind)| (prop::bool::weighted(0.85), field_value(*kind)))
        .collect();
    (values, prop::bool::weighted(0.1)).prop_map(move |(values, extra)| {
        let mut map = Map::new();
        for ((field, _), (present, value)) in fields.iter().zip(values) {
            if present {
                map.insert(field.clone(), value);
            }
        }
        if extra {
            map.insert("unexpected".to_string(), Value::Bool(true));
        }
        Value::Object(map)
    })
}
