//! serde accepts a JSON array wherever it expects a struct (filling fields by position), so
//! `"process": {"user": []}` would parse as a default user. The spec's objects must be objects: this
//! streams through the document once, without building it, and names the first field that is not.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Paths whose values must be JSON objects. `[]` means every element of an array, `{}` every value of
/// a map.
const OBJECTS: &[&str] = &[
    "root",
    "process",
    "process.user",
    "process.capabilities",
    "process.consoleSize",
    "process.rlimits[]",
    "mounts[]",
    "mounts[].uidMappings[]",
    "mounts[].gidMappings[]",
    "hooks",
    "hooks.prestart[]",
    "hooks.createRuntime[]",
    "hooks.createContainer[]",
    "hooks.startContainer[]",
    "hooks.poststart[]",
    "hooks.poststop[]",
    "linux",
    "linux.uidMappings[]",
    "linux.gidMappings[]",
    "linux.namespaces[]",
    "linux.devices[]",
    "linux.timeOffsets{}",
    "linux.resources",
    "linux.resources.devices[]",
    "linux.resources.memory",
    "linux.resources.cpu",
    "linux.resources.pids",
    "linux.resources.blockIO",
    "linux.resources.blockIO.weightDevice[]",
    "linux.resources.blockIO.throttleReadBpsDevice[]",
    "linux.resources.blockIO.throttleWriteBpsDevice[]",
    "linux.resources.blockIO.throttleReadIOPSDevice[]",
    "linux.resources.blockIO.throttleWriteIOPSDevice[]",
    "linux.resources.hugepageLimits[]",
    "linux.resources.network",
    "linux.resources.network.priorities[]",
    "linux.resources.rdma{}",
    "linux.seccomp",
    "linux.seccomp.syscalls[]",
    "linux.seccomp.syscalls[].args[]",
];

/// What [`check`] found wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// A value at one of [`OBJECTS`] is not an object: its JSON path and what it is instead.
    Shape(String, String),
    /// The document is not valid JSON (or too deeply nested); the full parse describes it.
    Syntax,
}

/// The document itself must be an object, and so must every value at [`OBJECTS`] that is present
/// (and not null, which the typed parse judges). When several are wrong, the one whose entry comes
/// first in [`OBJECTS`] is named; invalid JSON anywhere takes precedence over all of them.
pub fn check(data: &[u8]) -> Result<(), Error> {
    let found = RefCell::new(None);
    let root = Walk {
        pattern: String::new(),
        at: String::new(),
        rule: Some(usize::MAX),
        found: &found,
    };
    let mut de = serde_json::Deserializer::from_slice(data);
    root.deserialize(&mut de).map_err(|_| Error::Syntax)?;
    de.end().map_err(|_| Error::Syntax)?;
    match found.into_inner() {
        Some((_, at, message)) => Err(Error::Shape(at, message)),
        None => Ok(()),
    }
}

/// The first wrong value so far: its rule's index in [`OBJECTS`] (`usize::MAX` for the document
/// itself, which is checked first), path and message.
type Found = RefCell<Option<(usize, String, String)>>;

/// One value of the document being walked: the pattern it matches (`mounts[].uidMappings[]`), its
/// concrete path (`mounts[2].uidMappings[0]`), and whether it must be an object (by which rule).
struct Walk<'f> {
    pattern: String,
    at: String,
    rule: Option<usize>,
    found: &'f Found,
}

impl Walk<'_> {
    fn child(&self, pattern: String, at: String) -> Walk<'_> {
        let rule = OBJECTS.iter().position(|o| *o == pattern);
        Walk {
            pattern,
            at,
            rule,
            found: self.found,
        }
    }

    fn not_an_object(&self, what: &str) {
        let Some(rule) = self.rule else { return };
        let mut found = self.found.borrow_mut();
        // The document itself sorts first; then the rules in their listed order.
        let key = rule.wrapping_add(1);
        if found
            .as_ref()
            .is_none_or(|(r, _, _)| key < r.wrapping_add(1))
        {
            let at = if self.at.is_empty() {
                "(document)".to_owned()
            } else {
                self.at.clone()
            };
            *found = Some((rule, at, format!("expected an object, found {what}")));
        }
    }
}

/// Whether any rule concerns `pattern` or what lies inside it.
fn relevant(pattern: &str) -> bool {
    OBJECTS.iter().any(|o| {
        o.strip_prefix(pattern)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[', '{']))
    })
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean");
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number");
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number");
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_object("a number");
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string");
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.not_an_object("an array");
        let each = format!("{}[]", self.pattern);
        if !relevant(&each) {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let mut i = 0;
        while seq
            .next_element_seed(self.child(each.clone(), format!("{}[{i}]", self.at)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let each = format!("{}{{}}", self.pattern);
        let every_value = relevant(&each);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let pattern = if every_value {
                each.clone()
            } else {
                join(&self.pattern, &key)
            };
            if relevant(&pattern) {
                map.next_value_seed(self.child(pattern, join(&self.at, &key)))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(doc: &str) -> Result<(), Error> {
        check(doc.as_bytes())
    }

    fn field(doc: &str) -> String {
        match shape(doc) {
            Err(Error::Shape(at, _)) => at,
            other => panic!("{doc}: {other:?}"),
        }
    }

    #[test]
    fn arrays_for_objects_are_named() {
        assert_eq!(field(r#"{"process": {"user": []}}"#), "process.user");
        assert_eq!(field(r#"{"mounts": [{}, [1]]}"#), "mounts[1]");
        assert_eq!(
            field(r#"{"linux": {"timeOffsets": {"boottime": 5}}}"#),
            "linux.timeOffsets.boottime"
        );
        assert_eq!(
            field(r#"{"mounts": [{"uidMappings": [{}, "x"]}]}"#),
            "mounts[0].uidMappings[1]"
        );
        assert_eq!(field("[]"), "(document)");
        assert_eq!(
            shape("[]"),
            Err(Error::Shape(
                "(document)".into(),
                "expected an object, found an array".into()
            ))
        );
        assert!(shape(r#"{"hooks": null, "mounts": "x"}"#).is_ok());
        assert!(shape(r#"{"annotations": {"process": []}, "x": [[{"root": 1}]]}"#).is_ok());
    }

    #[test]
    fn first_rule_wins_and_syntax_errors_come_first() {
        assert_eq!(
            field(r#"{"linux": {"resources": []}, "process": {"user": 1}}"#),
            "process.user"
        );
        assert_eq!(
            shape(r#"{"process": {"user": []}, "x": }"#),
            Err(Error::Syntax)
        );
        assert_eq!(shape(r#"{"process": {}} x"#), Err(Error::Syntax));
        assert_eq!(
            shape(r#"{"linux": {"resources": {"memory": "#),
            Err(Error::Syntax)
        );
    }
}
