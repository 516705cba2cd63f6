//! Reading JSON leniently without building `serde_json::Value`s.
//!
//! Platforms are loose about JSON types (ids as numbers or strings, fields that are sometimes
//! objects), so adapters read such fields as "whatever it is" and keep what they can use. Going
//! through `Value` for that allocates for every string, array and object only to drop most of it;
//! [`Scalar`] keeps strings, numbers and booleans and skips everything else in place.

use serde::{Deserialize, Deserializer};

/// One JSON value read leniently without building a `serde_json::Value`: strings, numbers and
/// booleans are kept, anything else (null, arrays, objects) is skipped in place. Readers built on
/// it give exactly the results that reading a `serde_json::Value` and matching on it gave.
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number, exactly as `Value::Number` would hold it.
    Num(serde_json::Number),
    /// A boolean.
    Bool(bool),
    /// Null, an array or an object (skipped).
    Other,
}

/// The visitor behind [`Scalar`], for readers that handle some shapes themselves.
pub struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        // As `Value` does: a non-finite float is null.
        Ok(serde_json::Number::from_f64(v).map_or(Scalar::Other, Scalar::Num))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}
