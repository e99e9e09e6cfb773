//! Assembles the service: store, pipeline, worker and router.

use std::sync::Arc;

use axum::Router;

use crate::config::ServeConfig;
use crate::pipeline::Pipeline;
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

/// Why the agents run without models; shown on /health and in the UI.
pub fn model_notes(pipeline: &Pipeline) -> Vec<String> {
    let (classifier, troubleshooter) = pipeline.engines();
    let mut notes = Vec::new();
    if classifier == "rules" {
        notes.push("classifier: no zero-shot model loaded; keyword rules in use".to_string());
    }
    if troubleshooter == "rules" {
        notes.push(
            "troubleshooter: no text-generation model loaded; category playbooks in use"
                .to_string(),
        );
    }
    notes
}

/// Opens the store, starts the worker and builds the router. Must run
/// inside a tokio runtime.
pub fn build(config: ServeConfig, pipeline: Pipeline) -> Result<App, AppError> {
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
    // Parse the VADER lexicon now rather than on the first ticket.
    crate::agents::vader::Vader::global();
    let engines = Engines::from_pipeline(&pipeline, model_notes(&pipeline));
    let handle = WorkerHandle::new();
    let worker = worker::spawn(
        store.clone(),
        Arc::new(pipeline),
        handle.clone(),
        config.workers,
    );
    let state = Arc::new(AppState::new(store, config, handle, engines));
    Ok(App {
        router: web::router(state.clone()),
        state,
        worker,
    })
}
