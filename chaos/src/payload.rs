//! Payloads for an endpoint, from the JSON Schema of its request type.
//!
//! [`Generator::valid_ish`] builds a value the schema describes, with field
//! values drawn from a pool of awkward ones (empty and huge strings, subject
//! wildcards, control characters, extreme integers). [`Generator::payload`]
//! then, most of the time, breaks it: a required field dropped, an unknown
//! field added, a value of the wrong type, the whole body replaced by another
//! JSON type, truncated, nested too deep, or not JSON at all.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// How deep generated values nest before the generator stops descending.
const MAX_DEPTH: usize = 6;

/// Awkward strings: each has found bugs somewhere.
const STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "sku-keyboard",
    "USD",
    "usd",
    "tok_ok",
    "tok_decline",
    "a.b",
    "*",
    ">",
    "events.user.profile.x",
    "_INBOX.x",
    "ünïcødé ✓",
    "\u{0}",
    "\n\r\t",
    "../../etc/passwd",
    "' OR 1=1 --",
    "{}",
    "null",
    "-1",
    "9999999999999999999999",
    "x@y",
    "ann@example.com",
];

const INTEGERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    100,
    999,
    1_000_000,
    1_000_001,
    i32::MAX as i64,
    i64::MAX,
    i64::MIN,
];

/// Builds payloads for one schema.
pub struct Generator {
    rng: StdRng,
}

impl Generator {
    /// A generator whose payloads are a function of `seed`, so a finding can be replayed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One request body for `schema`: valid-ish a quarter of the time, else mutated.
    pub fn payload(&mut self, schema: &Value) -> Vec<u8> {
        let value = self.valid_ish(schema, schema, 0);
        match self.rng.random_range(0..16) {
            0..=3 => encode(&value),
            4 => encode(&self.drop_a_field(value)),
            5 => encode(&self.add_a_field(value)),
            6 => encode(&self.retype_a_field(value)),
            7 => encode(&self.other_json()),
            8 => {
                let mut bytes = encode(&value);
                let cut = self.rng.random_range(0..bytes.len().max(1));
                bytes.truncate(cut);
                bytes
            }
            9 => {
                let depth = self.rng.random_range(100..3000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            }
            10 => (0..self.rng.random_range(1..64))
                .map(|_| self.rng.random::<u8>())
                .collect(),
            11 => Vec::new(),
            _ => {
                let dropped = self.drop_a_field(value);
                encode(&self.retype_a_field(dropped))
            }
        }
    }

    /// A value `schema` describes (`root` holds its `$defs`).
    pub fn valid_ish(&mut self, schema: &Value, root: &Value, depth: usize) -> Value {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or_default();
            let target = root
                .get("$defs")
                .and_then(|d| d.get(name))
                .cloned()
                .unwrap_or(Value::Null);
            return self.valid_ish(&target, root, depth + 1);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                if !options.is_empty() {
                    let pick = &options[self.rng.random_range(0..options.len())];
                    return self.valid_ish(pick, root, depth + 1);
                }
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.is_empty() && self.rng.random_bool(0.8) {
                return options[self.rng.random_range(0..options.len())].clone();
            }
        }
        if let Some(value) = schema.get("const") {
            return value.clone();
        }
        let kind = match schema.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(Value::Array(kinds)) if !kinds.is_empty() => kinds
                [self.rng.random_range(0..kinds.len())]
            .as_str()
            .unwrap_or("null")
            .to_string(),
            _ => "null".to_string(),
        };
        match kind.as_str() {
            "object" if depth < MAX_DEPTH => self.object(schema, root, depth),
            "array" if depth < MAX_DEPTH => {
                let items = schema.get("items").cloned().unwrap_or(Value::Null);
                let len = match self.rng.random_range(0..10) {
                    0 => 0,
                    1 => 200,
                    _ => self.rng.random_range(1..4),
                };
                Value::Array(
                    (0..len)
                        .map(|_| self.valid_ish(&items, root, depth + 1))
                        .collect(),
                )
            }
            "string" => Value::String(self.string()),
            "integer" => json!(self.integer()),
            "number" => json!(self.integer() as f64 / 3.0),
            "boolean" => json!(self.rng.random_bool(0.5)),
            _ => Value::Null,
        }
    }

    fn object(&mut self, schema: &Value, root: &Value, depth: usize) -> Value {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut object = Map::new();
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if required.contains(&name.as_str()) || self.rng.random_bool(0.5) {
                    object.insert(name.clone(), self.valid_ish(property, root, depth + 1));
                }
            }
        }
        Value::Object(object)
    }

    fn string(&mut self) -> String {
        match self.rng.random_range(0..12) {
            0 => "x".repeat(self.rng.random_range(65..5000)),
            1 => format!("{:x}", self.rng.random::<u128>()),
            _ => STRINGS[self.rng.random_range(0..STRINGS.len())].to_string(),
        }
    }

    fn integer(&mut self) -> i64 {
        match self.rng.random_range(0..4) {
            0 => self.rng.random_range(-1000..1000),
            _ => INTEGERS[self.rng.random_range(0..INTEGERS.len())],
        }
    }

    fn drop_a_field(&mut self, value: Value) -> Value {
        match value {
            Value::Object(mut map) if !map.is_empty() => {
                let key = map.keys().nth(self.rng.random_range(0..map.len())).cloned();
                if let Some(key) = key {
                    map.remove(&key);
                }
                Value::Object(map)
            }
            other => other,
        }
    }

    fn add_a_field(&mut self, value: Value) -> Value {
        match value {
            Value::Object(mut map) => {
                map.insert("unexpected_field".to_string(), json!(self.string()));
                Value::Object(map)
            }
            other => other,
        }
    }

    fn retype_a_field(&mut self, value: Value) -> Value {
        match value {
            Value::Object(mut map) if !map.is_empty() => {
                let key = map.keys().nth(self.rng.random_range(0..map.len())).cloned();
                if let Some(key) = key {
                    let other = self.other_json();
                    map.insert(key, other);
                }
                Value::Object(map)
            }
            other => other,
        }
    }

    fn other_json(&mut self) -> Value {
        match self.rng.random_range(0..7) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(self.integer()),
            3 => json!(1.5e300),
            4 => json!(self.string()),
            5 => json!([1, "two", null]),
            _ => json!({"nested": {"deeper": [self.string()]}}),
        }
    }
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "$defs": {"Line": {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}, "required": ["id", "n"]}},
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
                "note": {"type": ["string", "null"]},
                "kind": {"enum": ["a", "b"]}
            },
            "required": ["items"]
        })
    }

    #[test]
    fn valid_ish_values_follow_the_schema_shape() {
        let mut generator = Generator::new(7);
        let schema = schema();
        for _ in 0..200 {
            let value = generator.valid_ish(&schema, &schema, 0);
            let items = value["items"].as_array().expect("required array present");
            for item in items {
                assert!(item["id"].is_string() && item["n"].is_i64(), "{item}");
            }
        }
    }

    #[test]
    fn payloads_are_a_function_of_the_seed_and_varied() {
        let schema = schema();
        let run = |seed| {
            let mut generator = Generator::new(seed);
            (0..300)
                .map(|_| generator.payload(&schema))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        let payloads = run(1);
        let json = payloads
            .iter()
            .filter(|p| serde_json::from_slice::<Value>(p).is_ok())
            .count();
        assert!(json > 100 && json < 300, "a mix of JSON and not: {json}");
        assert!(payloads.iter().any(|p| p.is_empty()));
        assert!(payloads.iter().any(|p| p.len() > 1000));
    }
}
