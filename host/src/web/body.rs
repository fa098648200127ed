//! Request bodies: JSON (what Hydra clients send) or an HTML form, parsed
//! into typed requests with errors that name the field at fault.
//!
//! Hydra's forms send booleans as `"1"`/`"on"` and numbers as strings, and
//! scripts send what Hydra's JSON gives back; both are accepted.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Parses a body by its Content-Type (JSON when none is given).
pub fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
        let object: serde_json::Map<String, serde_json::Value> =
            form.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        return from_value(serde_json::Value::Object(object));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request has no body; send a JSON object"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    from_value(value)
}

/// A typed request from a JSON value (an HTML form's fields put in one),
/// with the field at fault named.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid_field(path, e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projects::spec::{flexible_bool, flexible_int};
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Sample {
        #[serde(default, deserialize_with = "flexible_bool")]
        enabled: Option<bool>,
        #[serde(default, deserialize_with = "flexible_int")]
        shares: Option<i64>,
    }

    fn json(body: &str) -> Result<Sample, ApiError> {
        parse(&HeaderMap::new(), &Bytes::from(body.to_owned()))
    }

    #[test]
    fn accepts_what_hydra_clients_send() {
        let s = json(r#"{"enabled": "1", "shares": "100"}"#).unwrap();
        assert_eq!((s.enabled, s.shares), (Some(true), Some(100)));
        let s = json(r#"{"enabled": false}"#).unwrap();
        assert_eq!(s.enabled, Some(false));
        let s = json("{}").unwrap();
        assert_eq!((s.enabled, s.shares), (None, None));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(json("{not json").unwrap_err().message.contains("malformed JSON body"));
        assert!(json("[1]").unwrap_err().message.contains("JSON object"));
        assert!(json("").unwrap_err().message.contains("no body"));
        let err = json(r#"{"shares": "many"}"#).unwrap_err().message;
        assert!(err.contains("shares") && err.contains("not an integer"), "{err}");
    }

    #[test]
    fn form_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        let s: Sample = parse(&headers, &Bytes::from_static(b"enabled=on&shares=7")).unwrap();
        assert_eq!((s.enabled, s.shares), (Some(true), Some(7)));
    }
}
