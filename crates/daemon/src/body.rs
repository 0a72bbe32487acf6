//! A JSON body extractor whose errors name the field at fault (`serde_path_to_error`), bounded
//! by the router's body limit.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` with `{"error", "field"}` errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!(
                        "request body too large: at most {} bytes",
                        crate::BODY_LIMIT
                    ),
                    None,
                )
            } else {
                ApiError::new(status, e.body_text(), None)
            }
        })?;
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
                None,
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

/// Parse `bytes` as `T`, naming the field of the first error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let mut field = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        // serde reports unknown and missing fields at the parent's path: name them.
        for marker in ["unknown field `", "missing field `"] {
            if let Some(rest) = msg.split(marker).nth(1) {
                if let Some(name) = rest.split('`').next() {
                    field = if field.is_empty() {
                        name.to_string()
                    } else if field == name || field.ends_with(&format!(".{name}")) {
                        field
                    } else {
                        format!("{field}.{name}")
                    };
                }
            }
        }
        let kind = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{kind}: {msg}"),
            (!field.is_empty()).then_some(field.as_str()),
        )
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
            None,
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        cpus: u32,
        #[serde(default)]
        env: Vec<String>,
    }

    #[test]
    fn errors_name_the_field() {
        let f = |b: &str| parse::<S>(b.as_bytes()).unwrap_err().body.field;
        assert_eq!(f(r#"{"cpus": "two"}"#).as_deref(), Some("cpus"));
        assert_eq!(f(r#"{"cpus": 1, "bogus": 2}"#).as_deref(), Some("bogus"));
        assert_eq!(f(r#"{}"#).as_deref(), Some("cpus"));
        assert_eq!(
            f(r#"{"cpus": 1, "env": ["a", 3]}"#).as_deref(),
            Some("env[1]")
        );
        // Truncated JSON: the error points at where the input ended.
        assert_eq!(f(r#"{"cpus": "#).as_deref(), Some("cpus"));
        assert!(parse::<S>(br#"{"cpus": 1} x"#).is_err());
        assert_eq!(parse::<S>(br#"{"cpus": 1}"#).unwrap().cpus, 1);
    }
}
