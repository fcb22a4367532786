//! `POST /admin/reload`: hot swap of the relevance model.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub(crate) async fn admin_reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(r) = state.inner.reloader.clone() else {
        return Err(ApiError::unavailable(
            "no relevance-model source is configured, so there is nothing to reload",
        ));
    };
    match tokio::task::spawn_blocking(move || r.reload(true))
        .await
        .map_err(|e| ApiError::internal(format!("the reload task failed: {e}")))?
    {
        Ok(outcome) => Ok(Json(json!(outcome)).into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "reload_error",
            e.to_string(),
        )),
    }
}
