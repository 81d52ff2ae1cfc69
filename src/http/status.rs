//! The one place where a failed request becomes a status code. Every error
//! says who caused it (the client, the worker, load, or us), as pingora's
//! error source does, and the mapping follows from that.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use crate::dispatch::DispatchError;

/// The `Allow` of a 405: the standard methods the server passes to the app.
const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Why a request got no response from the app.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client sent something we will not forward (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A method the server never forwards to the app, such as CONNECT (405).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// A header line or the whole head is over a limit (431).
    #[error("request header fields too large: {0}")]
    HeaderTooLarge(&'static str),
    /// The body is over `--limit-request-body` (413).
    #[error("request body is over the size limit")]
    BodyTooLarge,
    /// The body sent no bytes for `--body-timeout` (408).
    #[error("the request body sent nothing for the body timeout")]
    BodyTimeout,
    /// The client went away or broke the body while we read it (400; rarely seen).
    #[error("client failed while sending the body: {0}")]
    ClientBody(String),
    /// No worker lane became free (503).
    #[error(transparent)]
    Overloaded(#[from] DispatchError),
    /// Taking this body would put the bytes held for bodies not yet handed
    /// to a worker past `--max-buffered-bodies` (503).
    #[error("request bodies waiting for a worker are over the memory bound")]
    BodiesOverBound,
    /// The worker died or broke the protocol mid-request (502).
    #[error("worker failed: {0}")]
    Worker(String),
    /// The app raised before it sent a response (500).
    #[error("app error: {0}")]
    App(String),
    /// The request ran past `--timeout` (504).
    #[error("request ran past the timeout")]
    Timeout,
    /// The path is not under the SCRIPT_NAME of the environment (500, as
    /// gunicorn's `ConfigurationProblem`: the server is set up wrong).
    #[error("request path does not start with SCRIPT_NAME")]
    OutsideScriptName,
}

impl RequestError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) | RequestError::ClientBody(_) => StatusCode::BAD_REQUEST,
            RequestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::HeaderTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            RequestError::Overloaded(_) | RequestError::BodiesOverBound => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Worker(_) => StatusCode::BAD_GATEWAY,
            RequestError::App(_) | RequestError::OutsideScriptName => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RequestError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the client caused it (then it is not worth an error log line).
    pub fn is_client_fault(&self) -> bool {
        self.status().is_client_error()
    }

    /// The response for this error: a short text body.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let mut response = Response::new(ResponseBody::full(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        match self {
            RequestError::Overloaded(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of the body stays unread, so the connection closes too.
            RequestError::BodiesOverBound => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // RFC 9110 §15.5.6 wants the methods that would work: the
            // server forwards these to the app (which may refuse them).
            RequestError::MethodNotAllowed(_) => {
                headers.insert(ALLOW, HeaderValue::from_static(FORWARDED_METHODS));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // The rest of a refused body is never read, and after a framing
            // error nothing says where the next request starts (gunicorn
            // closes too): don't reuse the connection.
            RequestError::BadRequest(_)
            | RequestError::BodyTooLarge
            | RequestError::BodyTimeout
            | RequestError::ClientBody(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Why a connection is answered and closed before any HTTP is read: its
/// PROXY protocol header (gunicorn's `ForbiddenProxyRequest`, 403, and
/// `InvalidProxyLine`, 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnRefusal {
    /// A PROXY header from a peer not in `proxy_allow_ips` (403).
    #[error("PROXY header from a peer not in proxy_allow_ips")]
    ProxyForbidden,
    /// A PROXY header that does not parse (400).
    #[error("invalid PROXY header")]
    ProxyMalformed,
}

impl ConnRefusal {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            ConnRefusal::ProxyForbidden => StatusCode::FORBIDDEN,
            ConnRefusal::ProxyMalformed => StatusCode::BAD_REQUEST,
        }
    }

    /// The whole response, written straight to the socket (hyper has not
    /// started on the connection), which then closes.
    pub fn response_bytes(self) -> Vec<u8> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let body = format!("{} {reason}\n", status.as_u16());
        format!(
            "HTTP/1.1 {} {reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: ferrocorn\r\n\r\n{body}",
            status.as_u16(),
            body.len()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_status() {
        let cases = [
            (RequestError::BadRequest("x"), 400),
            (RequestError::MethodNotAllowed("CONNECT"), 405),
            (RequestError::HeaderTooLarge("x"), 431),
            (RequestError::BodyTooLarge, 413),
            (RequestError::BodyTimeout, 408),
            (RequestError::BodiesOverBound, 503),
            (RequestError::Overloaded(DispatchError::QueueFull), 503),
            (RequestError::Worker("gone".into()), 502),
            (RequestError::App("boom".into()), 500),
            (RequestError::Timeout, 504),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
        }
    }

    #[test]
    fn overload_says_when_to_retry() {
        let response = RequestError::Overloaded(DispatchError::QueueTimeout).into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn a_body_refused_midway_closes_the_connection() {
        for err in [RequestError::BodyTimeout, RequestError::BodiesOverBound] {
            let response = err.into_response();
            assert_eq!(response.headers()[CONNECTION], "close");
        }
        let response = RequestError::BodiesOverBound.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn a_refused_method_says_what_is_allowed_and_closes() {
        let response = RequestError::MethodNotAllowed("CONNECT").into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers()[ALLOW].to_str().unwrap().contains("GET"));
        assert_eq!(response.headers()[CONNECTION], "close");
    }
}
