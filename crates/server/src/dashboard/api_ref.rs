//! `GET /dashboard/api`: the admin API's reference, rendered on the server
//! from the same OpenAPI document `/api/v1/openapi.json` serves. No viewer
//! script is vendored: the page is HTML under the dashboard's CSP, readable
//! without JavaScript, and cannot drift from the document.

use std::sync::LazyLock;

use askama::Template;
use axum::Extension;
use serde_json::Value;

use super::admin::PageResult;
use super::page;
use super::session::Session;
use super::views::Chrome;

/// One operation as the page shows it.
pub struct OpItem {
    /// `get-programs-slug`: the fragment that links to it.
    pub anchor: String,
    pub method: String,
    pub path: String,
    pub summary: String,
    pub description: String,
    /// `false` only for the event stream (a key or a signed URL's query).
    pub needs_key: bool,
    pub params: Vec<FieldItem>,
    /// The request body's schema, as text.
    pub body: Option<TypeText>,
    /// `(status, description, schema)`.
    pub responses: Vec<(String, String, Option<TypeText>)>,
}

/// The operations of one tag.
pub struct OpGroup {
    pub tag: String,
    pub ops: Vec<OpItem>,
}

/// A parameter or an object's property.
pub struct FieldItem {
    pub name: String,
    /// `path`, `query`, `header`, or empty for a property.
    pub location: String,
    pub required: bool,
    pub schema: TypeText,
    pub description: String,
}

/// A schema as a phrase (`string matching ^[A-Z]{3}$ or null`), with the
/// named schema it is about, when there is one, to link to.
pub struct TypeText {
    pub text: String,
    pub link: Option<String>,
}

/// A named schema of the document's components.
pub struct SchemaItem {
    pub name: String,
    pub description: String,
    /// What it is when it is not an object with properties.
    pub kind: String,
    pub fields: Vec<FieldItem>,
}

#[derive(Template)]
#[template(path = "api.html")]
pub(super) struct ApiPage {
    c: Chrome,
    r: &'static Reference,
}

/// Built once: the document does not change while the process runs.
pub struct Reference {
    title: String,
    version: String,
    description: String,
    groups: Vec<OpGroup>,
    schemas: Vec<SchemaItem>,
}

static REFERENCE: LazyLock<Reference> =
    LazyLock::new(|| reference(&crate::http::openapi::document_json()));

/// `GET /dashboard/api`.
pub async fn api(Extension(s): Extension<Session>) -> PageResult {
    Ok(page(&ApiPage {
        c: Chrome::new(&s, "API reference", "api"),
        r: &REFERENCE,
    }))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The longest enumeration written out; longer ones (currencies, time
/// zones) are counted.
const ENUM_SHOWN: usize = 12;

/// A schema as a phrase.
fn type_text(s: &Value) -> TypeText {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r).to_owned();
        return TypeText {
            text: name.clone(),
            link: Some(name),
        };
    }
    for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
        if let Some(parts) = s.get(key).and_then(Value::as_array) {
            let parts: Vec<TypeText> = parts.iter().map(type_text).collect();
            let link = parts.iter().find_map(|p| p.link.clone());
            let mut text = parts
                .into_iter()
                .map(|p| p.text)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(joiner);
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                let names: Vec<String> = req.iter().map(text_of).collect();
                text.push_str(&format!(", with {} required", names.join(", ")));
            }
            return TypeText { text, link };
        }
    }
    let mut kinds: Vec<String> = match s.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().map(text_of).collect(),
        _ => Vec::new(),
    };
    let nullable = kinds.iter().any(|k| k == "null");
    kinds.retain(|k| k != "null");
    let mut text = kinds.join(" or ");
    let mut link = None;
    if kinds.iter().any(|k| k == "array") {
        let items = s.get("items").map(type_text);
        if let Some(items) = items {
            text = format!("array of {}", items.text);
            link = items.link;
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        text = if values.len() > ENUM_SHOWN {
            format!("one of {} values", values.len())
        } else {
            let shown: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            format!("one of {}", shown.join(", "))
        };
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        text.push_str(&format!(" matching {p}"));
    }
    match (s.get("minimum"), s.get("maximum")) {
        (Some(lo), Some(hi)) => text.push_str(&format!(" from {lo} to {hi}")),
        (Some(lo), None) => text.push_str(&format!(" ≥ {lo}")),
        _ => {}
    }
    if let Some(f) = s.get("format").and_then(Value::as_str) {
        text.push_str(&format!(" ({f})"));
    }
    if text.is_empty() {
        text = "any JSON".to_owned();
    }
    if nullable {
        text.push_str(" or null");
    }
    TypeText { text, link }
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The first schema of an answer or a body (JSON first).
fn content_schema(v: &Value) -> Option<TypeText> {
    let content = v.get("content")?.as_object()?;
    let (ct, c) = content
        .get_key_value("application/json")
        .or_else(|| content.iter().next())?;
    match c.get("schema") {
        Some(s) => Some(type_text(s)),
        None => Some(TypeText {
            text: ct.clone(),
            link: None,
        }),
    }
}

fn fields(s: &Value) -> Vec<FieldItem> {
    let required: Vec<String> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(text_of).collect())
        .unwrap_or_default();
    s.get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.iter())
        .map(|(name, p)| FieldItem {
            name: name.clone(),
            location: String::new(),
            required: required.contains(name),
            schema: type_text(p),
            description: text(&p["description"]),
        })
        .collect()
}

fn reference(doc: &Value) -> Reference {
    let mut groups: Vec<OpGroup> = Vec::new();
    let paths = doc["paths"].as_object().into_iter().flat_map(|p| p.iter());
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else {
                continue;
            };
            let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| FieldItem {
                    name: text(&p["name"]),
                    location: text(&p["in"]),
                    required: p["required"].as_bool().unwrap_or(false),
                    schema: type_text(&p["schema"]),
                    description: text(&p["description"]),
                })
                .collect();
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flat_map(|r| r.iter())
                .map(|(status, r)| (status.clone(), text(&r["description"]), content_schema(r)))
                .collect();
            let anchor = format!("{method}{}", path.replace(['/', '{', '}'], "-"))
                .trim_end_matches('-')
                .to_owned();
            let entry = OpItem {
                anchor,
                method: method.to_ascii_uppercase(),
                path: format!("/api/v1{path}"),
                summary: text(&op["summary"]),
                description: text(&op["description"]),
                needs_key: op.get("security").is_some(),
                params,
                body: op.get("requestBody").and_then(content_schema),
                responses,
            };
            match groups.iter_mut().find(|g| g.tag == tag) {
                Some(g) => g.ops.push(entry),
                None => groups.push(OpGroup {
                    tag,
                    ops: vec![entry],
                }),
            }
        }
    }
    groups.sort_by(|a, b| a.tag.cmp(&b.tag));
    let components = &doc["components"]["schemas"];
    let schemas = components
        .as_object()
        .into_iter()
        .flat_map(|s| s.iter())
        .map(|(name, s)| {
            // A flattened view: the properties of every member, a named
            // member's from its own schema.
            let member = |m: &Value| {
                let named = m
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|n| components.get(n));
                fields(named.unwrap_or(m))
            };
            let fields: Vec<FieldItem> = match s.get("allOf").and_then(Value::as_array) {
                Some(all) => all.iter().flat_map(member).collect(),
                None => fields(s),
            };
            SchemaItem {
                name: name.clone(),
                description: text(&s["description"]),
                kind: if fields.is_empty() {
                    type_text(s).text
                } else {
                    String::new()
                },
                fields,
            }
        })
        .collect();
    let info = &doc["info"];
    Reference {
        title: text(&info["title"]),
        version: text(&info["version"]),
        description: text(&info["description"]),
        groups,
        schemas,
    }
}
