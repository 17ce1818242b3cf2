//! The admin API's OpenAPI 3.1 document, `GET /api/v1/openapi.json`.
//!
//! Generated, never written by hand: the operations come from the
//! `#[utoipa::path]` of each handler as [`super::api_routes`] mounts them
//! (one list makes both the router and the document), the schemas from the
//! types the handlers read and answer (`utoipa::ToSchema`). What every
//! operation shares is added here once:
//! - bearer API keys (`Authorization: Bearer cw_…`), `read` or `admin`
//!   scope (docs/api.md, "Keys");
//! - the one error shape, `Error` (`{"error", "reason"}`), for every 4xx
//!   and 5xx an operation does not describe itself (conversion intake
//!   answers in the postback words, `IntakeAnswer`);
//! - `Retry-After` on 429;
//! - links between operations (create → read → update → disable), which
//!   say how a client goes from an answer to the next request, and which
//!   schemathesis follows in CI (`it/openapi.rs`).
//!
//! The document is built once per process and served as bytes.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa::{Modify, OpenApi as _};

use super::error::ErrorBody;

/// The document's fixed part: title, version, components shared by every
/// operation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "clickward admin API",
        description = "Programs, affiliates, links, clicks, conversions, reports, events out, fraud rules and privacy operations of a clickward tracker. Lists page with `limit` and an opaque `cursor` (`next_cursor` is null on the last page). Times are UTC microseconds unless a field says otherwise; money is integer minor units beside decimal text. See docs/api.md.",
        license(name = "MIT OR Apache-2.0")
    ),
    servers((url = "/api/v1", description = "This server")),
    components(schemas(ErrorBody)),
    modifiers(&Shared)
)]
struct Fixed;

/// Security, error answers and links on every operation.
struct Shared;

/// Scheme name of the bearer API keys in the document.
const BEARER: &str = "api_key";

impl Modify for Shared {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`clickward key create`); `read` keys may only read.",
                    ))
                    .build(),
            ),
        );
    }
}

/// What [`Shared`] cannot add before the paths exist: per operation.
fn finish(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            shared_answers(path, op);
            add_links(op);
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    let mut r = Response::new(description);
    r.content.insert(
        "application/json".to_owned(),
        Content::new(Some(Ref::from_schema_name("Error"))),
    );
    RefOr::T(r)
}

fn shared_answers(path: &str, op: &mut Operation) {
    // The stream authenticates with a key or a signed URL's query instead.
    let anonymous = path == "/events";
    if !anonymous {
        op.security = Some(vec![SecurityRequirement::new::<_, [&str; 0], &str>(
            BEARER,
            [],
        )]);
    }
    let r = &mut op.responses.responses;
    if !r.contains_key("4XX") {
        r.entry("429".to_owned()).or_insert_with(|| {
            let mut resp = Response::new("Over `[limits] api`; `Retry-After` says when to retry");
            resp.headers.insert(
                "Retry-After".to_owned(),
                utoipa::openapi::HeaderBuilder::new()
                    .schema(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::Integer),
                    )
                    .description(Some("Seconds"))
                    .build(),
            );
            resp.content.insert(
                "application/json".to_owned(),
                Content::new(Some(Ref::from_schema_name("Error"))),
            );
            RefOr::T(resp)
        });
        r.insert(
            "4XX".to_owned(),
            error_response(
                "The request is wrong (400 names the query key or field), not allowed (401, 403), names nothing (404), conflicts with what is stored (409) or is invalid (422); nothing was changed",
            ),
        );
    }
    r.insert(
        "5XX".to_owned(),
        error_response(
            "The server could not do it (503: the database cannot be reached; nothing was done; try again)",
        ),
    );
}

/// `(from operation, status, to operation, parameter, expression)`: how an
/// answer leads to the next request.
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "create_program",
        "201",
        "get_program",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_program",
        "201",
        "update_program",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_program",
        "201",
        "disable_program",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_program",
        "201",
        "enable_program",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_program",
        "201",
        "list_overrides",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_affiliate",
        "201",
        "get_affiliate",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_affiliate",
        "201",
        "update_affiliate",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_affiliate",
        "201",
        "disable_affiliate",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_affiliate",
        "201",
        "enable_affiliate",
        "slug",
        "$response.body#/slug",
    ),
    (
        "create_link",
        "201",
        "get_link",
        "code",
        "$response.body#/code",
    ),
    (
        "create_link",
        "201",
        "update_link",
        "code",
        "$response.body#/code",
    ),
    (
        "create_link",
        "201",
        "disable_link",
        "code",
        "$response.body#/code",
    ),
    (
        "create_link",
        "201",
        "enable_link",
        "code",
        "$response.body#/code",
    ),
    (
        "create_link",
        "201",
        "link_qr",
        "code",
        "$response.body#/code",
    ),
    (
        "create_webhook",
        "201",
        "get_endpoint",
        "id",
        "$response.body#/id",
    ),
    (
        "create_webhook",
        "201",
        "update_endpoint",
        "id",
        "$response.body#/id",
    ),
    (
        "create_webhook",
        "201",
        "endpoint_action",
        "id",
        "$response.body#/id",
    ),
    (
        "create_postback",
        "201",
        "get_endpoint",
        "id",
        "$response.body#/id",
    ),
    (
        "create_postback",
        "201",
        "update_endpoint",
        "id",
        "$response.body#/id",
    ),
    (
        "add_exclusion",
        "201",
        "remove_exclusion",
        "id",
        "$response.body#/id",
    ),
    (
        "create_erasure",
        "201",
        "get_erasure",
        "id",
        "$response.body#/id",
    ),
    (
        "create_conversion",
        "201",
        "get_conversion",
        "id",
        "$response.body#/conversion_id",
    ),
    (
        "create_conversion",
        "201",
        "change_conversion",
        "id",
        "$response.body#/conversion_id",
    ),
];

/// `(from operation, status, to operation, request body)`: a create whose
/// answer names what the next create needs in its body (a link needs its
/// program, a postback its affiliate). String values that are runtime
/// expressions are evaluated, the rest sent as they are.
const BODY_LINKS: &[(&str, &str, &str, &str)] = &[
    (
        "create_program",
        "201",
        "create_link",
        r#"{"program": "$response.body#/slug", "code": "st-link", "destination": "https://shop.example/p?cid={click_id}"}"#,
    ),
    (
        "create_affiliate",
        "201",
        "create_postback",
        r#"{"affiliate": "$response.body#/slug", "url": "https://aff.example/pb?cid={click_id}"}"#,
    ),
];

fn add_links(op: &mut Operation) {
    let Some(id) = op.operation_id.clone() else {
        return;
    };
    let by_param = LINKS
        .iter()
        .filter(|l| l.0 == id)
        .map(|(from, status, to, param, expr)| {
            let b = utoipa::openapi::link::LinkBuilder::new()
                .parameter(*param, serde_json::Value::from(*expr));
            (*from, *status, *to, b)
        });
    let by_body = BODY_LINKS
        .iter()
        .filter(|l| l.0 == id)
        .map(|(from, status, to, body)| {
            let body: Option<serde_json::Value> = serde_json::from_str(body).ok();
            let b = utoipa::openapi::link::LinkBuilder::new().request_body(body);
            (*from, *status, *to, b)
        });
    for (from, status, to, builder) in by_param.chain(by_body).collect::<Vec<_>>() {
        let Some(RefOr::T(resp)) = op.responses.responses.get_mut(status) else {
            continue;
        };
        let link = builder
            .operation_id(to)
            .description(format!("{from} → {to}"))
            .build();
        resp.links.insert(to.to_owned(), RefOr::T(link));
    }
}

/// `(method, path, fields)`: what a create needs that the body's type, shared
/// with the change (`PATCH`) that may leave everything out, cannot say.
const REQUIRED_ON_CREATE: &[(&str, &str, &[&str])] = &[
    ("post", "/programs", &["slug"]),
    ("post", "/webhooks", &["url"]),
    ("post", "/postbacks", &["url", "affiliate"]),
];

/// Adds [`REQUIRED_ON_CREATE`] to the JSON document: the body's schema
/// becomes `allOf: [the shared schema, {required}]`.
fn require_on_create(v: &mut serde_json::Value) {
    for (method, path, fields) in REQUIRED_ON_CREATE {
        let pointer = format!(
            "/paths/{}/{method}/requestBody/content/application~1json/schema",
            path.replace('~', "~0").replace('/', "~1")
        );
        if let Some(schema) = v.pointer_mut(&pointer) {
            let shared = schema.take();
            // Required and not null: the shared type's `Option` says null.
            let present: serde_json::Map<_, _> = fields
                .iter()
                .map(|f| ((*f).to_owned(), serde_json::json!({"type": "string"})))
                .collect();
            *schema = serde_json::json!({
                "allOf": [shared, {"required": fields, "properties": present}]
            });
        }
    }
}

/// The document as utoipa makes it (before [`document_json`]'s repairs).
fn document() -> OpenApi {
    let mut doc = Fixed::openapi();
    let routes = super::api_routes().into_openapi();
    doc.paths = routes.paths;
    if let Some(c) = routes.components {
        let mine = doc.components.get_or_insert_with(Default::default);
        mine.schemas.extend(c.schemas);
    }
    finish(&mut doc);
    doc
}

/// The whole document as JSON, as served.
///
/// utoipa 5.5 serializes a Link object's fields in snake case
/// (`operation_id`, `request_body`) where OpenAPI 3.1 (Link Object) names them
/// `operationId` and `requestBody`; clients ignore the misspelled ones, so
/// they are renamed here until utoipa does it.
pub fn document_json() -> serde_json::Value {
    let mut v = serde_json::to_value(document()).unwrap_or_else(|e| {
        // A bug in a derive, not input: an empty object keeps the route
        // answering while the log says why.
        tracing::error!("the OpenAPI document does not serialize: {e}");
        serde_json::Value::Object(Default::default())
    });
    let links = v
        .get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|l| l.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("request_body", "requestBody"),
        ] {
            if let Some(x) = link.remove(snake) {
                link.insert(camel.to_owned(), x);
            }
        }
    }
    require_on_create(&mut v);
    open_flattened(&mut v);
    v
}

/// A `#[serde(flatten)]` field becomes `allOf: [{"$ref": Inner}, {outer
/// fields}]`; when `Inner` is a request body too it says
/// `additionalProperties: false` (`deny_unknown_fields`), which would forbid
/// the outer fields. Such members are inlined without that keyword.
fn open_flattened(v: &mut serde_json::Value) {
    let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    else {
        return;
    };
    let closed: BTreeMap<String, serde_json::Value> = schemas
        .iter()
        .filter(|(_, s)| s.get("additionalProperties") == Some(&serde_json::Value::Bool(false)))
        .map(|(name, s)| {
            let mut open = s.clone();
            if let Some(o) = open.as_object_mut() {
                o.remove("additionalProperties");
            }
            (format!("#/components/schemas/{name}"), open)
        })
        .collect();
    // Generic types (`Page<LinkView>`) hold their own copy of the allOf.
    fn walk(v: &mut serde_json::Value, closed: &BTreeMap<String, serde_json::Value>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(all) = o.get_mut("allOf").and_then(|a| a.as_array_mut()) {
                    for m in all.iter_mut() {
                        let open = m
                            .get("$ref")
                            .and_then(|r| r.as_str())
                            .and_then(|r| closed.get(r));
                        if let Some(open) = open {
                            *m = open.clone();
                        }
                    }
                }
                o.values_mut().for_each(|x| walk(x, closed));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, closed)),
            _ => {}
        }
    }
    schemas.values_mut().for_each(|s| walk(s, &closed));
}

static DOCUMENT: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&document_json()).unwrap_or_default());

/// `GET /api/v1/openapi.json`: public (it describes, it holds nothing).
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_slice(),
    )
}
