//! The actix application: routes, middleware and shared state, built the same way for the
//! listener and for in-process tests.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service as _, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App};

use crate::auth::token::TokenService;
use crate::config::{ServerSettings, Settings};
use crate::http::access_log::Pending;
use crate::http::forwarded::UntrustedForwarders;
use crate::registry::Registry;

/// What every worker's app shares.
#[derive(Clone)]
pub struct AppState {
    registry: web::Data<Registry>,
    server: web::Data<ServerSettings>,
    tokens: web::Data<TokenService>,
    forwarders: web::Data<UntrustedForwarders>,
}

impl AppState {
    /// `registry` and `tokens` (see [`super::token_service`]) with `settings`' server part.
    pub fn new(settings: &Settings, registry: &Arc<Registry>, tokens: TokenService) -> Self {
        AppState {
            registry: web::Data::from(Arc::clone(registry)),
            server: web::Data::new(settings.server.clone()),
            tokens: web::Data::new(tokens),
            forwarders: web::Data::new(UntrustedForwarders::default()),
        }
    }
}

/// The app serving every route, with the access log (and the request metrics it keeps) and
/// the stall limit on request bodies.
pub fn app(
    state: &AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let read_timeout = state.server.read_timeout;
    let (server, forwarders) = (state.server.clone(), state.forwarders.clone());
    let metrics = Arc::clone(state.registry.metrics());
    App::new()
        .app_data(state.registry.clone())
        .app_data(state.server.clone())
        .app_data(state.tokens.clone())
        .wrap_fn(move |mut req, service| {
            crate::http::stall::limit_silence(&mut req, read_timeout);
            forwarders.check(req.peer_addr(), req.headers(), &server);
            service.call(req)
        })
        // Outermost: the record covers everything inside, errors turned into answers too.
        .wrap_fn(move |req, service| {
            let pending = Pending::start(&req, Some(Arc::clone(&metrics)));
            let answer = service.call(req);
            async move {
                match answer.await {
                    Ok(response) => Ok(pending.finish(response)),
                    Err(e) => Err(pending.failed(e)),
                }
            }
        })
        .configure(crate::http::configure)
}
