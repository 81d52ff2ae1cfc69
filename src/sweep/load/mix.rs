//! The endpoint mix: each endpoint's request prepared once (method, URI,
//! headers, body), and a weighted pick driven by a caller's RNG so a seeded
//! RNG gives a repeatable sequence. Does no I/O.

use std::net::SocketAddr;

/// The largest generated body: one copy is shared by every request.
const MAX_BODY_SIZE: usize = 1 << 30;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::Full;
use rand::Rng;

use super::LoadError;
use crate::sweep::model::Endpoint;

/// One endpoint's request, built once; each send clones its parts (the URI
/// and body are reference-counted bytes, the header map is one small copy).
#[derive(Debug)]
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// The prepared endpoints and their cumulative weights.
#[derive(Debug)]
pub(crate) struct Mix {
    templates: Vec<Template>,
    /// `cumulative[i]` = sum of the weights of endpoints `0..=i`.
    cumulative: Vec<u64>,
}

impl Mix {
    /// Prepares `endpoints` for requests to `target`.
    ///
    /// # Errors
    /// [`LoadError::EmptyMix`] for no endpoints, [`LoadError::BadEndpoint`]
    /// for a zero weight, a method or path that is not valid HTTP.
    pub(crate) fn new(endpoints: &[Endpoint], target: SocketAddr) -> Result<Mix, LoadError> {
        if endpoints.is_empty() {
            return Err(LoadError::EmptyMix);
        }
        let host = HeaderValue::from_str(&target.to_string())
            .expect("invariant: a socket address is a valid header value");
        let mut templates = Vec::with_capacity(endpoints.len());
        let mut cumulative = Vec::with_capacity(endpoints.len());
        let mut total = 0u64;
        for e in endpoints {
            let bad = |reason: String| LoadError::BadEndpoint {
                name: e.name.clone(),
                reason,
            };
            if e.weight == 0 {
                return Err(bad(
                    "weight is 0: give it a weight of at least 1 or remove it".into(),
                ));
            }
            let method = Method::from_bytes(e.method.as_bytes())
                .map_err(|_| bad(format!("method {:?} is not an HTTP method", e.method)))?;
            if !e.path.starts_with('/') {
                return Err(bad(format!("path {:?} must start with '/'", e.path)));
            }
            let uri: Uri = e
                .path
                .parse()
                .map_err(|err| bad(format!("path {:?} is not a valid URI: {err}", e.path)))?;
            let mut headers = HeaderMap::with_capacity(1);
            headers.insert(HOST, host.clone());
            let body = match (&e.body, e.body_size) {
                (_, Some(size)) => {
                    let size = usize::try_from(size)
                        .ok()
                        .filter(|&n| n <= MAX_BODY_SIZE)
                        .ok_or_else(|| {
                            bad(format!("body_size {size} is over {MAX_BODY_SIZE} bytes"))
                        })?;
                    Bytes::from(vec![b'x'; size])
                }
                (Some(b), None) => Bytes::from(b.clone()),
                (None, None) => Bytes::new(),
            };
            templates.push(Template {
                method,
                uri,
                headers,
                body,
            });
            total += u64::from(e.weight);
            cumulative.push(total);
        }
        Ok(Mix {
            templates,
            cumulative,
        })
    }

    /// Picks an endpoint index with probability proportional to its weight.
    pub(crate) fn pick(&self, rng: &mut impl Rng) -> usize {
        let total = *self
            .cumulative
            .last()
            .expect("invariant: Mix::new refuses an empty mix");
        let ticket = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= ticket)
    }

    /// A fresh request for endpoint `index` (from [`Mix::pick`]).
    pub(crate) fn request(&self, index: usize) -> Request<Full<Bytes>> {
        let t = &self.templates[index];
        let mut req = Request::new(Full::new(t.body.clone()));
        *req.method_mut() = t.method.clone();
        *req.uri_mut() = t.uri.clone();
        *req.headers_mut() = t.headers.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn endpoint(name: &str, method: &str, path: &str, weight: u32) -> Endpoint {
        Endpoint {
            name: name.into(),
            method: method.into(),
            path: path.into(),
            body: None,
            body_size: None,
            weight,
        }
    }

    fn target() -> SocketAddr {
        "127.0.0.1:8000".parse().unwrap()
    }

    #[test]
    fn picks_follow_the_weights_and_repeat_with_the_seed() {
        let mix = Mix::new(
            &[
                endpoint("a", "GET", "/a", 1),
                endpoint("b", "GET", "/b", 3),
                endpoint("c", "GET", "/c", 6),
            ],
            target(),
        )
        .unwrap();
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..10_000).map(|_| mix.pick(&mut rng)).collect::<Vec<_>>()
        };
        let picks = draw(7);
        assert_eq!(picks, draw(7));
        assert_ne!(picks, draw(8));
        let counts = [0, 1, 2].map(|i| picks.iter().filter(|&&p| p == i).count());
        assert!((800..=1200).contains(&counts[0]), "{counts:?}");
        assert!((2700..=3300).contains(&counts[1]), "{counts:?}");
        assert!((5600..=6400).contains(&counts[2]), "{counts:?}");
    }

    #[tokio::test]
    async fn request_carries_method_path_host_and_body() {
        let mut post = endpoint("echo", "POST", "/echo?x=1", 1);
        post.body = Some("hello".into());
        let mix = Mix::new(&[post], target()).unwrap();
        for _ in 0..2 {
            let req = mix.request(0);
            assert_eq!(req.method(), Method::POST);
            assert_eq!(req.uri(), "/echo?x=1");
            assert_eq!(req.headers()[HOST], "127.0.0.1:8000");
            assert_eq!(req.into_body().collect().await.unwrap().to_bytes(), "hello");
        }
    }

    #[test]
    fn bad_endpoints_are_named() {
        let err = |e: Endpoint| Mix::new(&[e], target()).unwrap_err().to_string();
        assert_eq!(
            Mix::new(&[], target()).unwrap_err().to_string(),
            LoadError::EmptyMix.to_string()
        );
        assert!(err(endpoint("z", "GET", "/", 0)).contains("endpoint \"z\": weight is 0"));
        assert!(err(endpoint("m", "GE T", "/", 1)).contains("endpoint \"m\": method \"GE T\""));
        assert!(err(endpoint("p", "GET", "cpu", 1))
            .contains("endpoint \"p\": path \"cpu\" must start with '/'"));
        assert!(err(endpoint("q", "GET", "/a b", 1))
            .contains("endpoint \"q\": path \"/a b\" is not a valid URI"));
    }
}
