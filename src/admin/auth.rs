//! Bearer-token check for the admin API, in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AdminState;
use crate::api_error::ApiError;

pub(super) async fn require_token(
    State(st): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if bool::from(t.as_bytes().ct_eq(st.token.expose().as_bytes())) => {
            next.run(req).await
        }
        Some(_) => ApiError::Unauthorized("invalid admin token".into()).into_response(),
        None => ApiError::Unauthorized(
            "missing admin token: send Authorization: Bearer <admin.token>".into(),
        )
        .into_response(),
    }
}
