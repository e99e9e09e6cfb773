//! HTTP: the JSON API, the server-rendered pages, authentication and assets.

pub mod api;
pub mod assets;
pub mod auth;
pub mod charts;
pub mod desk;
pub mod error;
pub mod health;
pub mod kb;
pub mod live;
pub mod pages;
pub mod replies;
pub mod server;
pub mod telemetry;
pub mod users;
pub mod view;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use std::time::Duration;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::ServeConfig;
use crate::guard::{KeyedLimiter, LoginGuard, LoginLimits, TrustedProxies};
use crate::inference::generator::GeneratorService;
use crate::inference::nli::ZeroShotClassifier;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::worker::WorkerHandle;
use assets::{Assets, Templates};
use auth::Sessions;
use error::ApiError;

/// Which engines the agents run on, and why models are missing.
/// The engine a web node names: it runs none, the worker nodes do.
pub const ON_WORKERS: &str = "worker nodes";

#[derive(Debug, Clone, serde::Serialize)]
pub struct Engines {
    pub classifier: String,
    pub troubleshooter: String,
    pub sentiment: String,
    /// True when every agent runs on rules (no model loaded).
    pub degraded: bool,
    /// Why models are not in use (shown on /health and in the UI banner).
    pub notes: Vec<String>,
}

impl Engines {
    pub fn from_pipeline(pipeline: &Pipeline, notes: Vec<String>) -> Self {
        let (classifier, troubleshooter) = pipeline.engines();
        let degraded = !Self::model(&classifier) && !Self::model(&troubleshooter);
        Engines {
            classifier,
            troubleshooter,
            sentiment: "vader".into(),
            degraded,
            notes,
        }
    }

    /// Whether an engine is a loaded model (not the keyword rules, nor the
    /// learned classifier that trains at start-up).
    fn model(engine: &str) -> bool {
        engine != "rules" && engine != crate::agents::classifier::LEARNED_ENGINE
    }

    /// A web node's: the models run on the worker nodes (their engines are
    /// on `/health`, under `nodes`).
    pub fn on_workers() -> Self {
        Engines {
            classifier: ON_WORKERS.into(),
            troubleshooter: ON_WORKERS.into(),
            sentiment: ON_WORKERS.into(),
            degraded: false,
            notes: Vec::new(),
        }
    }

    pub fn banner(&self) -> Option<String> {
        if self.degraded {
            Some("rules only — no models loaded".into())
        } else if !Self::model(&self.classifier) || !Self::model(&self.troubleshooter) {
            Some(format!(
                "partly degraded — classifier: {}, troubleshooter: {}",
                self.classifier, self.troubleshooter
            ))
        } else {
            None
        }
    }
}

pub struct AppState {
    pub store: Arc<Store>,
    pub config: ServeConfig,
    pub worker: WorkerHandle,
    pub engines: Engines,
    pub templates: Templates,
    pub assets: Assets,
    pub sessions: Sessions,
    /// Password and token guesses: bounded cost, throttled failures.
    pub login: LoginGuard,
    pub intake_by_addr: KeyedLimiter,
    pub intake_all: KeyedLimiter,
    /// Customers' other writes (ratings, resolve), per address.
    pub writes_by_addr: KeyedLimiter,
    pub streams: live::StreamSlots,
    /// Which staff have which ticket open (the collision hint).
    pub presence: crate::desk::presence::Presence,
    pub trusted_proxies: TrustedProxies,
    pub shutdown: Shutdown,
    pub health: health::HealthCache,
    /// The zero-shot model behind `/api/classify`, when loaded.
    pub nli: Option<ZeroShotClassifier>,
    /// The troubleshooter's text generator, when loaded.
    pub generator: Option<GeneratorService>,
    /// Who sees AI answers, per category (the settings page edits it).
    pub policy: crate::agents::policy::PolicyHandle,
    /// Webhook endpoints from the configuration file.
    pub hooks: Arc<crate::notify::Webhooks>,
    /// Whether a mail server is configured (`[smtp]`).
    pub mail: bool,
    /// Service levels (`[sla.*]`), when configured.
    pub sla: Option<Arc<crate::sla::SlaConfig>>,
    /// This process on the database (its role and name).
    pub node: crate::cluster::Node,
}

pub type SharedState = Arc<AppState>;

impl crate::guard::client::HasTrustedProxies for SharedState {
    fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }
}

/// What `AppState::new` needs besides the configuration.
pub struct Parts {
    pub store: Arc<Store>,
    pub worker: WorkerHandle,
    pub engines: Engines,
    pub nli: Option<ZeroShotClassifier>,
    pub generator: Option<GeneratorService>,
    pub shutdown: Shutdown,
    /// The result of the start-up integrity check, when it found problems.
    pub integrity: Option<String>,
    pub policy: crate::agents::policy::PolicyHandle,
    /// The configuration file's webhooks.
    pub hooks: Arc<crate::notify::Webhooks>,
    /// Whether a mail server is configured.
    pub mail: bool,
    pub sla: Option<Arc<crate::sla::SlaConfig>>,
    pub node: crate::cluster::Node,
}

impl AppState {
    pub fn new(config: ServeConfig, p: Parts) -> Self {
        let l = &config.limits;
        let templates = Templates::new(config.templates_dir.clone());
        let assets = Assets::new(config.assets_dir.clone());
        AppState {
            store: p.store,
            worker: p.worker,
            engines: p.engines,
            templates,
            assets,
            sessions: Sessions::default(),
            login: LoginGuard::new(LoginLimits::new(
                l.login_concurrency,
                l.login_guesses_per_minute,
            )),
            intake_by_addr: KeyedLimiter::new(l.intake_per_address, l.intake_per_address),
            intake_all: KeyedLimiter::new(l.intake_per_minute, l.intake_per_minute),
            writes_by_addr: KeyedLimiter::new(l.writes_per_address, l.writes_per_address),
            streams: live::StreamSlots::new(l.max_streams, l.max_streams_per_ticket),
            presence: Default::default(),
            trusted_proxies: TrustedProxies(config.trusted_proxies.clone()),
            shutdown: p.shutdown,
            health: health::HealthCache::new(p.integrity),
            nli: p.nli,
            generator: p.generator,
            policy: p.policy,
            hooks: p.hooks,
            mail: p.mail,
            sla: p.sla,
            node: p.node,
            config,
        }
    }

    /// A ticket as its customer sees it.
    pub fn customer_view(&self, rec: &crate::store::TicketRecord) -> serde_json::Value {
        let ai_answer = rec
            .analysis
            .as_ref()
            .is_some_and(|a| crate::desk::customer_sees_ai_answer(&a.solution));
        view::ticket_json(
            rec,
            &self.config.public_url(),
            view::Audience::Customer { ai_answer },
        )
    }

    /// A ticket as staff see it, with its service levels now.
    pub fn staff_view(&self, rec: &crate::store::TicketRecord) -> serde_json::Value {
        let mut v = view::ticket_json(rec, &self.config.public_url(), view::Audience::Staff);
        if let Some(obj) = v.as_object_mut() {
            let sla = self
                .sla
                .as_ref()
                .and_then(|cfg| crate::sla::report::report(cfg, rec, jiff::Timestamp::now()));
            obj.insert("sla".into(), serde_json::json!(sla));
        }
        v
    }

    /// Runs a store call off the async threads.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

/// JSON body extractor whose rejections use our error format.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status();
                let code = match status.as_u16() {
                    400 => "invalid_json",
                    413 => "payload_too_large",
                    415 => "unsupported_media_type",
                    422 => "invalid_body",
                    _ => "bad_request",
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// Headers for every response: no framing, no sniffing, and no Referer, so a
/// tracker URL (which holds the customer's secret) never leaks to other sites.
/// Everything but the static assets is private or live: `no-store`, so no
/// browser or proxy cache keeps a tracker, an admin page or an API answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let cacheable = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !cacheable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// A worker node's HTTP: its health and its metrics, nothing customers or
/// staff use.
pub fn worker_router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(telemetry::metrics_page))
        .fallback(api::not_on_worker)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(telemetry::track))
        .with_state(state)
}

pub fn router(state: SharedState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/health", get(health::health))
        .route(
            "/api/tickets",
            post(api::create_ticket).get(api::list_tickets),
        )
        .route("/api/classify", post(api::classify))
        .route(
            "/api/tickets/{id}",
            get(api::admin_ticket).patch(desk::patch),
        )
        .route("/api/tickets/{id}/messages", post(desk::staff_message))
        .route("/api/tickets/{id}/assign", post(desk::assign))
        .route("/api/tickets/{id}/presence", post(desk::presence))
        .route("/api/t/{token}/messages", post(desk::customer_message))
        .route("/api/tickets/{id}/resolve", post(api::admin_resolve))
        .route("/api/t/{token}", get(api::customer_ticket))
        .route("/api/t/{token}/status", get(api::customer_status))
        .route("/api/t/{token}/events", get(live::customer_events))
        .route("/api/admin/events", get(live::admin_events))
        .route("/metrics", get(telemetry::metrics_page))
        .route("/api/t/{token}/resolve", post(api::customer_resolve))
        .route("/api/t/{token}/rating", post(api::customer_rating))
        .route("/", get(pages::index))
        .route("/tickets", post(pages::submit))
        .route("/t/{token}", get(pages::tracker))
        .route("/t/{token}/resolve", post(pages::tracker_resolve))
        .route("/t/{token}/rating", post(pages::tracker_rating))
        .route("/admin", get(pages::admin_tickets))
        .route("/admin/tickets.csv", get(pages::admin_tickets_csv))
        .route("/admin/overrides.csv", get(pages::admin_overrides_csv))
        .route("/admin/login", get(pages::login_form).post(pages::login))
        .route("/admin/logout", post(pages::logout))
        .route("/admin/tickets", get(pages::admin_tickets))
        .route("/admin/tickets/{id}", get(pages::admin_ticket))
        .route("/admin/tickets/{id}/resolve", post(pages::admin_resolve))
        .route("/admin/tickets/{id}/{action}", post(desk::staff_form_post))
        .route("/t/{token}/messages", post(desk::tracker_reply))
        .route("/admin/users", get(users::page).post(users::create))
        .route("/admin/replies", get(replies::page).post(replies::create))
        .route("/admin/replies/{id}/delete", post(replies::delete))
        .route("/admin/users/{name}/{action}", post(users::change))
        .route("/kb", get(kb::public_index))
        .route("/kb/{slug}", get(kb::public_article))
        .route("/admin/kb", get(kb::admin_index).post(kb::admin_save))
        .route("/admin/kb/new", get(kb::admin_new))
        .route("/admin/kb/{slug}", get(kb::admin_edit))
        .route("/admin/kb/{slug}/delete", post(kb::admin_delete))
        .route("/admin/settings", get(kb::settings).post(kb::save_settings))
        .route("/admin/webhooks", get(webhooks::index))
        .route("/admin/webhooks/replay", post(webhooks::replay))
        .route("/admin/webhooks/enable", post(webhooks::enable))
        .route("/assets/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            state.config.limits.body_timeout_secs.max(1),
        )))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(telemetry::id_in_errors))
        .layer(middleware::from_fn(telemetry::track))
        // Spans name the route pattern, never the URI: tracker URIs hold secrets.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", |m| m.as_str());
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("http", method = %req.method(), route, request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(
            telemetry::RequestIds::default(),
        ))
        // Outermost: a client's request id is kept only when short and plain.
        .layer(middleware::from_fn(telemetry::drop_unsafe_request_id))
        .with_state(state)
}
