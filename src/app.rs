//! Assembles the service: store, pipeline, worker and router.

use std::sync::Arc;

use axum::Router;

use crate::config::ServeConfig;
use crate::models::LoadedModels;
use crate::store::{Store, StoreError};
use crate::web::{self, AppState, Engines, SharedState};
use crate::worker::{self, WorkerHandle};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the database {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot set the admin password: {0}")]
    Password(String),
}

pub struct App {
    pub router: Router,
    pub state: SharedState,
    pub worker: tokio::task::JoinHandle<()>,
}

/// Opens the store, starts the worker and builds the router. Must run
/// inside a tokio runtime.
pub fn build(config: ServeConfig, models: LoadedModels) -> Result<App, AppError> {
    let store = Store::open(&config.db).map_err(|source| AppError::Store {
        path: config.db.display().to_string(),
        source,
    })?;
    let store = Arc::new(store);
    if let Some(pw) = config.admin_password.as_deref().filter(|p| !p.is_empty()) {
        let hash = web::auth::hash_password(pw).map_err(|e| AppError::Password(e.to_string()))?;
        store
            .set_setting(web::auth::PASSWORD_SETTING, &hash)
            .map_err(|e| AppError::Password(e.to_string()))?;
        tracing::info!("admin password set from SMART_SUPPORT_ADMIN_PASSWORD");
    }
    // Install the metrics recorder before anything records.
    web::telemetry::handle();
    // Parse the VADER lexicon now rather than on the first ticket.
    crate::agents::vader::Vader::global();
    let LoadedModels {
        pipeline,
        nli,
        generator,
        notes,
    } = models;
    let engines = Engines::from_pipeline(&pipeline, notes);
    let handle = WorkerHandle::new();
    let worker = worker::spawn(
        store.clone(),
        Arc::new(pipeline),
        handle.clone(),
        config.workers,
    );
    let state = Arc::new(AppState::new(
        store, config, handle, engines, nli, generator,
    ));
    Ok(App {
        router: web::router(state.clone()),
        state,
        worker,
    })
}
