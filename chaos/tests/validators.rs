//! Property tests of every request type the services declare: whatever JSON
//! arrives, decoding and `RequestBody::validate` either accept it or refuse it
//! with a 400 that says what is wrong; they never panic and never answer 5xx.
//! Field names come from each type's JSON Schema, so the validators (not only
//! the decoder) see awkward values.

use proptest::prelude::*;
use serde_json::Value;
use shop_actors::RequestBody;
use testkit::props::FieldKind;

/// One request type: its name, its fields, and decode-then-validate.
struct Case {
    name: &'static str,
    fields: Vec<(String, FieldKind)>,
    check: fn(&Value) -> Result<(), String>,
    /// Whether a value decodes into the type (so its validator runs).
    decodes: fn(&Value) -> bool,
}

fn case<T: RequestBody>(name: &'static str) -> Case {
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    let kind = |property: &Value| {
        let resolved = match property["$ref"].as_str() {
            Some(reference) => &schema["$defs"][reference.rsplit('/').next().unwrap_or_default()],
            None => property,
        };
        match &resolved["type"] {
            Value::String(t) if t == "integer" => FieldKind::Integer,
            Value::String(t) if t == "string" => FieldKind::Text,
            Value::Array(types) if types.contains(&Value::from("integer")) => FieldKind::Integer,
            Value::Array(types) if types.contains(&Value::from("string")) => FieldKind::Text,
            _ => FieldKind::Other,
        }
    };
    let fields = schema["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(name, property)| (name.clone(), kind(property)))
                .collect()
        })
        .unwrap_or_default();
    Case {
        name,
        fields,
        check: check::<T>,
        decodes: |value| serde_json::from_value::<T>(value.clone()).is_ok(),
    }
}

fn check<T: RequestBody>(value: &Value) -> Result<(), String> {
    let Ok(request) = serde_json::from_value::<T>(value.clone()) else {
        return Ok(()); // the decoder's 400, covered by the codec's own tests
    };
    match request.validate() {
        Ok(()) => Ok(()),
        Err(e) if e.code == 400 && !e.message.trim().is_empty() => Ok(()),
        Err(e) => Err(format!("{} {}", e.code, e.message)),
    }
}

fn cases() -> Vec<Case> {
    use notification_service::domain as notification;
    use order_service::domain as order;
    use payment_service::domain as payment;
    use product_service::domain as product;
    use user_service::domain as user;
    vec![
        case::<product::CreateProduct>("CreateProduct"),
        Case {
            name: "CreateProduct (domain::validate_create)",
            fields: case::<product::CreateProduct>("").fields,
            check: |value| match serde_json::from_value::<product::CreateProduct>(value.clone()) {
                Err(_) => Ok(()),
                Ok(request) => match product::validate_create(&request, || "generated".into()) {
                    Err(e) if e.code != 400 => Err(format!("{} {}", e.code, e.message)),
                    _ => Ok(()),
                },
            },
            decodes: |value| {
                serde_json::from_value::<product::CreateProduct>(value.clone()).is_ok()
            },
        },
        case::<product::GetProduct>("GetProduct"),
        case::<product::UpdateProduct>("UpdateProduct"),
        case::<product::ListProducts>("ListProducts"),
        case::<product::StockChange>("StockChange"),
        case::<user::RegisterUser>("RegisterUser"),
        case::<user::Login>("Login"),
        case::<user::GetUser>("GetUser"),
        case::<user::UpdateUser>("UpdateUser"),
        case::<payment::ChargePayment>("ChargePayment"),
        case::<payment::RefundPayment>("RefundPayment"),
        case::<payment::GetPayment>("GetPayment"),
        case::<notification::ListNotifications>("ListNotifications"),
        case::<order::CreateOrder>("CreateOrder"),
        case::<order::GetOrder>("GetOrder"),
        case::<order::ListOrders>("ListOrders"),
        case::<order::CancelOrder>("CancelOrder"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn every_request_type_accepts_or_refuses_with_a_400(
        (index, value) in (0..cases().len()).prop_flat_map(|i| {
            testkit::props::object_with(cases()[i].fields.clone()).prop_map(move |v| (i, v))
        })
    ) {
        let case = &cases()[index];
        let outcome = (case.check)(&value);
        prop_assert!(outcome.is_ok(), "{}: {:?} for {}", case.name, outcome, value);
    }

    #[test]
    fn any_json_at_all_is_accepted_or_refused(value in testkit::props::json(), index in 0..17usize) {
        let cases = cases();
        let case = &cases[index % cases.len()];
        prop_assert!((case.check)(&value).is_ok(), "{}: {}", case.name, value);
    }
}

/// The generated objects do reach the validators: for every type some decode.
#[test]
fn the_generated_objects_reach_the_validators() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for case in cases() {
        assert!(
            !case.fields.is_empty(),
            "{} has fields in its schema",
            case.name
        );
        let strategy = testkit::props::object_with(case.fields.clone());
        let decoded = (0..300)
            .filter_map(|_| strategy.new_tree(&mut runner).ok())
            .filter(|tree| (case.decodes)(&tree.current()))
            .count();
        assert!(decoded > 0, "{}: none of 300 objects decoded", case.name);
    }
}
