//! `/configz`: the configuration in effect, `{"kubeletconfig": {...}}`, as kubelet shows it.

use serde_json::{json, Value};

use super::reply::{self, Reply};
use crate::node::config::KubeletConfiguration;

/// The document `/configz` answers with: the file's fields with the defaults filled in.
pub fn document(c: &KubeletConfiguration) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        m.retain(|_, v| !v.is_null());
    }
    json!({ "kubeletconfig": v })
}

pub fn serve(doc: &Value) -> Reply {
    reply::json(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_fields_by_their_file_names() {
        let d = document(&KubeletConfiguration::default());
        let k = &d["kubeletconfig"];
        assert_eq!(k["port"], 10250);
        assert_eq!(k["healthzPort"], 10248);
        assert_eq!(k["serverTLSBootstrap"], false);
        assert!(
            k.get("kind").is_none() && k.get("providerID").is_none(),
            "{d}"
        );
    }
}
