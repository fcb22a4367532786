//! Bounded request bodies: list fields whose length is checked while the
//! JSON is parsed, so a body with too many items is refused (413) at the
//! first item past the limit, before the rest is read or built.
//!
//! [`crate::state::ApiJson`] runs each body's deserialization inside a
//! [`Scope`] holding the server's `--max-client-batch`; a [`Bounded`] field
//! reads its list through a visitor that counts items against it, and the
//! refusal it records there becomes the answer.

use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// The most items in a list outside a [`Scope`] (the default
/// `--max-client-batch`).
pub(crate) const DEFAULT_MAX_ITEMS: usize = 512;

/// The bounds of one body's deserialization and the refusal it ran into.
pub(crate) struct Scope {
    max_items: usize,
    refusal: RefCell<Option<ApiError>>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

impl Scope {
    pub(crate) fn new(max_items: usize) -> Self {
        Self {
            max_items,
            refusal: RefCell::new(None),
        }
    }

    /// Runs `f` (a body's extraction) within a scope of `max_items`; also
    /// returns the refusal a bounded field recorded, if any.
    pub(crate) async fn run<F: std::future::Future>(
        max_items: usize,
        f: F,
    ) -> (F::Output, Option<ApiError>) {
        SCOPE
            .scope(Self::new(max_items), async {
                let out = f.await;
                let refusal = SCOPE.with(|s| s.refusal.borrow_mut().take());
                (out, refusal)
            })
            .await
    }
}

fn max_items() -> usize {
    SCOPE.try_with(|s| s.max_items).unwrap_or(DEFAULT_MAX_ITEMS)
}

/// Records `e` as the body's answer and stops the parse.
fn refuse<E: de::Error>(e: ApiError) -> E {
    let message = e.message.clone();
    // Outside a scope the serde error alone carries the message.
    let _ = SCOPE.try_with(|s| *s.refusal.borrow_mut() = Some(e));
    E::custom(message)
}

/// The name of a bounded field, for its messages and `param`.
pub(crate) trait Field {
    const NAME: &'static str;
}

macro_rules! field {
    ($t:ident, $name:literal) => {
        #[derive(Debug)]
        pub(crate) struct $t;
        impl Field for $t {
            const NAME: &'static str = $name;
        }
    };
}
field!(Input, "input");
field!(Inputs, "inputs");
field!(Documents, "documents");
field!(Texts, "texts");

/// A JSON value whose lists, at any depth, hold at most the scope's
/// `max_items` items: the parse stops with a 413 at the first item past it.
#[derive(Debug)]
pub(crate) struct Bounded<F>(pub Value, PhantomData<F>);

impl<F> Bounded<F> {
    pub(crate) fn into_inner(self) -> Value {
        self.0
    }
}

impl<'de, F: Field> Deserialize<'de> for Bounded<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(BoundedVisitor::<F>(PhantomData))?;
        Ok(Self(v, PhantomData))
    }
}

struct BoundedVisitor<F>(PhantomData<F>);

impl<'de, F: Field> Visitor<'de> for BoundedVisitor<F> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Bounded::<F>::deserialize(d).map(Bounded::into_inner)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let max = max_items();
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(max).min(64));
        while let Some(Bounded(v, _)) = seq.next_element::<Bounded<F>>()? {
            if out.len() == max {
                return Err(refuse(
                    ApiError::too_large(format!(
                        "more than {max} items in a list of `{}`; the limit is {max} \
                         (--max-client-batch)",
                        F::NAME
                    ))
                    .with_param(F::NAME),
                ));
            }
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, Bounded(v, _))) = map.next_entry::<String, Bounded<F>>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_refused_at_the_first_item_past_the_limit() {
        let (r, refusal) = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Scope::run(3, async {
                // Never read: the parse stops at the fourth item.
                serde_json::from_str::<Bounded<Input>>(r#"["a", "b", "c", "d", this is not JSON"#)
            }));
        assert!(r.is_err());
        let e = refusal.expect("a refusal");
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.param.as_deref(), Some("input"));
        assert!(e.message.contains("more than 3 items"), "{}", e.message);
        let (r, refusal) = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Scope::run(3, async {
                serde_json::from_str::<Bounded<Input>>(r#"["a", {"text": [1, 2]}, 3.5]"#)
            }));
        assert!(refusal.is_none());
        assert_eq!(
            r.unwrap().0,
            serde_json::json!(["a", {"text": [1, 2]}, 3.5])
        );
    }
}
