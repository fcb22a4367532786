//! The `filters` object of `/v1/context`: path glob, kind, modification
//! time, read into the engine's typed [`Filter`].

use anectx_engine::filter::{parse_time, Filter};

use super::embeddings::json_type;
use crate::error::ApiError;

/// 400 naming `filters.<field>`.
fn bad_filter(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
    )
    .with_param(&format!("filters.{field}"))
}

/// Reads `filters`: `{path: glob, kind: "pdf,md" | ["pdf", "md"],
/// modified_after, modified_before: YYYY-MM-DD or RFC 3339}`; every bad
/// value is a 400 naming its field.
pub(crate) fn parse_filters(v: Option<serde_json::Value>) -> Result<Filter, ApiError> {
    use serde_json::Value;
    let o = match v {
        None | Some(Value::Null) => return Ok(Filter::default()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!(
                    "`filters` is {}, expected an object {{path, kind, modified_after, \
                     modified_before}}",
                    json_type(&other)
                ),
            )
            .with_param("filters"))
        }
    };
    let mut f = Filter::default();
    for (k, v) in o {
        let text = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(bad_filter(
                &k,
                format!("`filters.{k}` is {}, expected a string", json_type(other)),
            )),
        };
        match k.as_str() {
            "path" => f.path = Some(text(&v)?),
            "kind" => {
                f.kind = match &v {
                    Value::String(s) => Filter::parse_kinds(s),
                    Value::Array(items) => items
                        .iter()
                        .map(text)
                        .collect::<Result<Vec<_>, _>>()?
                        .iter()
                        .map(|s| Filter::parse_kinds(s))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| v.concat()),
                    other => {
                        return Err(bad_filter(
                            "kind",
                            format!(
                                "`filters.kind` is {}, expected a string or a list of strings",
                                json_type(other)
                            ),
                        ))
                    }
                }
                .map_err(|e| bad_filter("kind", e.message))?;
            }
            "modified_after" => {
                f.modified_after = Some(
                    parse_time("modified_after", &text(&v)?)
                        .map_err(|e| bad_filter("modified_after", e.message))?,
                )
            }
            "modified_before" => {
                f.modified_before = Some(
                    parse_time("modified_before", &text(&v)?)
                        .map_err(|e| bad_filter("modified_before", e.message))?,
                )
            }
            other => {
                return Err(bad_filter(
                    other,
                    format!(
                        "unknown filter `{other}`; filters are path, kind, modified_after and \
                         modified_before"
                    ),
                ))
            }
        }
    }
    f.compile().map_err(|e| bad_filter(e.param, e.message))?;
    Ok(f)
}
