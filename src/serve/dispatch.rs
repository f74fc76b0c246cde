//! The first step of every request: `/predict`, the path every prediction
//! takes, goes straight to its endpoint; every other path goes through
//! poem's router.
//!
//! The router costs a request more than its radix lookup: it stores the
//! matched pattern on the request and on the response (two extension
//! maps allocated, two reference counts shared by every core), and calls
//! the endpoint through a boxed future, a heap allocation plus a copy of
//! the whole future. That is paid by the route that carries nearly all
//! of the traffic for nothing: its path is one fixed string. The match
//! here is the router's (the raw path, exact: `/predict/` and
//! `/predict/x` go to the router and are 404s); the response carries the
//! route's template as [`MatchedRoute`] for the HTTP metrics, a plain
//! `&'static str`.

use poem::{Endpoint, IntoResponse, Request, Response};

/// The route template of a response that did not go through the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRoute(pub &'static str);

/// `endpoint` for requests to `path`, `routes` for every other (and for
/// `path` too when there is no `endpoint`).
pub struct PathFirst<E, R> {
    pub path: &'static str,
    pub endpoint: Option<E>,
    pub routes: R,
}

impl<E: Endpoint, R: Endpoint> Endpoint for PathFirst<E, R> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let endpoint = match &self.endpoint {
            Some(endpoint) if req.uri().path() == self.path => endpoint,
            _ => return self.routes.call(req).await.map(IntoResponse::into_response),
        };
        match endpoint.call(req).await {
            Ok(output) => {
                let mut response = output.into_response();
                response.set_data(MatchedRoute(self.path));
                Ok(response)
            }
            Err(mut error) => {
                error.set_data(MatchedRoute(self.path));
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::endpoint::make_sync;
    use poem::http::{Method, StatusCode};
    use poem::{get, EndpointExt, Route};

    fn app() -> impl Endpoint<Output = Response> {
        PathFirst {
            path: "/predict",
            endpoint: Some(make_sync(|_| "fast")),
            routes: Route::new()
                .at("/health", get(make_sync(|_| "routed")))
                .at("/predict/x", get(make_sync(|_| "routed below"))),
        }
        .map_to_response()
    }

    async fn answer(method: Method, uri: &str) -> (StatusCode, Option<MatchedRoute>, String) {
        let request = Request::builder().method(method).uri_str(uri).finish();
        let mut response = app().get_response(request).await;
        let route = response.data::<MatchedRoute>().copied();
        let text = response.take_body().into_string().await.unwrap_or_default();
        (response.status(), route, text)
    }

    #[tokio::test]
    async fn the_path_goes_straight_to_its_endpoint_with_its_route() {
        for uri in ["/predict", "/predict?a=1"] {
            assert_eq!(
                answer(Method::POST, uri).await,
                (
                    StatusCode::OK,
                    Some(MatchedRoute("/predict")),
                    "fast".into()
                )
            );
        }
    }

    #[tokio::test]
    async fn every_other_path_goes_through_the_router() {
        assert_eq!(
            answer(Method::GET, "/health").await,
            (StatusCode::OK, None, "routed".into())
        );
        assert_eq!(
            answer(Method::GET, "/predict/x").await,
            (StatusCode::OK, None, "routed below".into())
        );
        for uri in ["/predict/", "/Predict", "/nothing"] {
            assert_eq!(
                answer(Method::POST, uri).await.0,
                StatusCode::NOT_FOUND,
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn without_an_endpoint_the_path_goes_through_the_router_too() {
        let app = PathFirst {
            path: "/health",
            endpoint: None::<poem::endpoint::BoxEndpoint<'static, Response>>,
            routes: Route::new().at("/health", get(make_sync(|_| "routed"))),
        };
        let request = Request::builder().uri_str("/health").finish();
        let mut response = app.get_response(request).await;
        assert!(response.data::<MatchedRoute>().is_none());
        assert_eq!(
            response.take_body().into_string().await.unwrap_or_default(),
            "routed"
        );
    }
}
