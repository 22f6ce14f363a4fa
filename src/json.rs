//! A JSON object written field by field, its keys as they are: for the output records, whose
//! keys are fixed identifiers. serde's derived serialization runs every key through
//! `serde_json`'s string escaping, about 170 instructions a key, a fifth of a churn-risk
//! record's. Must not know which records exist.

use serde::Serialize;

/// An object being written into a buffer: `{` when made, `}` at [`Object::end`].
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Writes `"key":` and `value` as `serde_json` writes it. `key` is written as it is, so it
    /// must need no escaping (letters, digits and `_`).
    pub fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> &mut Self {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value)
            .expect("plain values with string keys serialize");
        self
    }

    /// Writes `"key":` and `value` as a JSON string, the bytes `serde_json` writes for it: as
    /// it is when nothing in it needs escaping (no `"`, `\\` or control character), as an id, a
    /// name or a reason's text does, without `serde_json`'s escaping loop (a churn-risk record
    /// took 4,882 instructions instead of 5,653; callgrind, `benches/HISTORY.md`, 2026-12-05);
    /// otherwise through it.
    pub fn text(&mut self, key: &'static str, value: &str) -> &mut Self {
        // Every byte looked at, with no early exit, so that the compiler checks many at once.
        let escaped = value.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if escaped {
            return self.field(key, value);
        }
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
        self
    }

    /// [`Object::text`], or `null` for `None`.
    pub fn text_or_null(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(key, value),
            None => self.field(key, &None::<()>),
        }
    }

    /// Writes `"key":` and an object that `fields` fills.
    pub fn object(&mut self, key: &'static str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = Object::new(self.out);
        fields(&mut inner);
        inner.end();
        self
    }

    /// Writes `"key":` and an array of one object per item, each filled by `fields`.
    pub fn objects<I: IntoIterator>(
        &mut self,
        key: &'static str,
        items: I,
        fields: impl Fn(&mut Object<'_>, I::Item),
    ) -> &mut Self {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let mut inner = Object::new(self.out);
            fields(&mut inner, item);
            inner.end();
        }
        self.out.push(b']');
        self
    }

    pub fn end(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{key:?} would need escaping"
        );
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_the_string_serde_json_writes() {
        let texts = [
            "",
            "c-0001234",
            "plain words, with punctuation: ;/?'",
            "quote \" and backslash \\",
            "control \u{0} \u{1f} tab\t newline\n",
            "delete \u{7f}, accents é, line separator \u{2028}, emoji \u{1f600}",
        ];
        for text in texts {
            let mut out = Vec::new();
            let mut object = Object::new(&mut out);
            object
                .text("a", text)
                .text_or_null("b", Some(text))
                .text_or_null("c", None);
            object.end();
            // `json!`'s maps sort their keys: the fields are written in that order.
            let want = serde_json::json!({"a": text, "b": text, "c": null});
            assert_eq!(
                String::from_utf8(out).unwrap(),
                want.to_string(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn writes_what_serde_json_writes_for_the_same_fields() {
        let mut out = Vec::new();
        let mut object = Object::new(&mut out);
        object
            .field("a", "x \"quoted\"\n")
            .field("b", &Some(1.25))
            .field("c", &None::<&str>)
            .object("d", |d| {
                d.field("e", &-3i64).field("f", &[1u8, 2]);
            })
            .object("g", |_| {})
            .objects("h", [1, 2], |h, n| {
                h.field("n", &n);
            })
            .objects("i", Vec::<u8>::new(), |_, _| {});
        object.end();
        let want = serde_json::json!({
            "a": "x \"quoted\"\n",
            "b": 1.25,
            "c": null,
            "d": {"e": -3, "f": [1, 2]},
            "g": {},
            "h": [{"n": 1}, {"n": 2}],
            "i": [],
        });
        assert_eq!(String::from_utf8(out).unwrap(), want.to_string());
    }
}
