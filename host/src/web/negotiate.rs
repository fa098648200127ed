//! Content negotiation: one URL answers JSON to programs and HTML to
//! browsers. JSON is chosen, as in Hydra, when the request says so —
//! `Accept: application/json`, `Content-Type: application/json`, or
//! `?content-type=application/json`; `/api/*` always answers JSON.
//!
//! Until the HTML pages exist, a JSON answer a browser asked for is shown
//! as a plain HTML document holding the same data.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The largest JSON answer turned into HTML; bigger ones stay JSON.
const MAX_WRAPPED: usize = 64 << 20;

fn mentions_json(value: Option<&HeaderValue>) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains("application/json"))
}

/// Whether the request asks for JSON.
pub fn wants_json(headers: &HeaderMap, query: Option<&str>, path: &str) -> bool {
    let by_query = query.is_some_and(|q| {
        q.split('&').filter_map(|pair| pair.split_once('=')).any(|(k, v)| {
            k == "content-type" && percent_encoding::percent_decode_str(v).decode_utf8_lossy() == "application/json"
        })
    });
    path.starts_with("/api/")
        || by_query
        || mentions_json(headers.get(header::ACCEPT))
        || mentions_json(headers.get(header::CONTENT_TYPE))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html_page(path: &str, json: &serde_json::Value) -> String {
    let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Orthrus — {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1rem;}}pre{{white-space:pre-wrap;}}\
         @media (prefers-color-scheme:dark){{body{{background:#111;color:#ddd}}}}</style></head>\
         <body><h1>{title}</h1><pre>{body}</pre></body></html>\n",
        title = escape_html(path),
        body = escape_html(&pretty)
    )
}

pub async fn negotiate(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let json = wants_json(request.headers(), request.uri().query(), &path);
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_WRAPPED).await else {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "answer too large to show as HTML").into_response();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(html_page(&path, &value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_chosen_when_asked_for() {
        let mut headers = HeaderMap::new();
        assert!(!wants_json(&headers, None, "/build/1"));
        assert!(wants_json(&headers, None, "/api/queue"));
        assert!(wants_json(&headers, Some("content-type=application%2Fjson"), "/build/1"));
        assert!(wants_json(&headers, Some("x=1&content-type=application/json"), "/build/1"));
        headers.insert(header::ACCEPT, "text/html, application/json;q=0.9".parse().unwrap());
        assert!(wants_json(&headers, None, "/build/1"));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(wants_json(&headers, None, "/build/1"));
    }

    #[test]
    fn html_escapes_the_data() {
        let page = html_page("/build/<1>", &serde_json::json!({ "x": "<script>" }));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
    }
}
