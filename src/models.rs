//! Loads the models named by [`ModelArgs`] and builds the pipeline on them.
//! A model that is absent or fails to load leaves its agent on rules, with a
//! note saying why (shown on /health and in the UI banner); it never stops
//! the service from starting.

use std::sync::Arc;
use std::time::Duration;

use crate::agents::classifier::Classifier;
use crate::agents::troubleshooter::Troubleshooter;
use crate::config::ModelArgs;
use crate::inference::generator::{GeneratorService, GgufGenerator};
use crate::inference::nli::{LoadOptions, ZeroShotClassifier};
use crate::inference::queue::QueueConfig;
use crate::inference::{self, InferenceError, first_line, hub};
use crate::pipeline::Pipeline;

pub struct LoadedModels {
    pub pipeline: Pipeline,
    pub nli: Option<ZeroShotClassifier>,
    pub generator: Option<GeneratorService>,
    /// Why agents run on rules, if they do.
    pub notes: Vec<String>,
}

impl LoadedModels {
    pub fn rules_only() -> Self {
        let pipeline = Pipeline::rules_only();
        LoadedModels {
            notes: notes(&pipeline, None, None),
            pipeline,
            nli: None,
            generator: None,
        }
    }

    pub fn with_nli(nli: ZeroShotClassifier) -> Self {
        let mut pipeline = Pipeline::rules_only();
        pipeline.classifier = Classifier::with_model(Arc::new(nli.clone()));
        LoadedModels {
            notes: notes(&pipeline, None, None),
            pipeline,
            nli: Some(nli),
            generator: None,
        }
    }
}

fn notes(pipeline: &Pipeline, nli_note: Option<String>, gen_note: Option<String>) -> Vec<String> {
    let (classifier, troubleshooter) = pipeline.engines();
    let mut notes = Vec::new();
    if classifier == "rules" {
        notes.push(nli_note.unwrap_or_else(|| {
            "classifier: no zero-shot model loaded; keyword rules in use".to_string()
        }));
    }
    if troubleshooter == "rules" {
        notes.push(gen_note.unwrap_or_else(|| {
            "troubleshooter: no text-generation model loaded; category playbooks in use".to_string()
        }));
    }
    notes
}

pub fn nli_options(args: &ModelArgs) -> Result<LoadOptions, InferenceError> {
    Ok(LoadOptions {
        device: inference::parse_device(&args.device)?,
        dtype: inference::parse_dtype(&args.nli_dtype)?,
        quant: inference::parse_quant(&args.nli_quant)?,
        queue: QueueConfig {
            capacity: args.queue_capacity.max(1),
            max_batch_items: args.max_batch_pairs.max(1),
            max_batch_tokens: args.max_batch_tokens.max(1),
            max_wait: Duration::from_millis(args.max_wait_ms),
        },
    })
}

/// Loads the NLI model: `Ok(None)` when none is configured (or `auto` finds none).
pub fn load_nli(args: &ModelArgs) -> Result<Option<ZeroShotClassifier>, InferenceError> {
    let spec = args.nli_model.trim();
    let (spec, optional) = match spec {
        "" | "none" | "off" => return Ok(None),
        "auto" => (hub::DEFAULT_NLI_REPO, true),
        other => (other, false),
    };
    let dir = match hub::resolve_model_dir(spec, &args.models_dir) {
        Ok(d) => d,
        Err(e) if optional => {
            tracing::info!("no zero-shot model found ({e})");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let name = if std::path::Path::new(spec).exists() {
        dir_name(&dir)
    } else {
        spec.rsplit('/').next().unwrap_or(spec)
    };
    ZeroShotClassifier::load(&dir, name, &nli_options(args)?).map(Some)
}

fn dir_name(dir: &std::path::Path) -> &str {
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("nli-model")
}

/// Loads the text generator and starts its worker: `Ok(None)` when none is
/// configured (or `auto` finds none).
pub fn load_generator(args: &ModelArgs) -> Result<Option<GeneratorService>, InferenceError> {
    let Some(path) = hub::resolve_gguf(&args.gen_model, &args.models_dir)? else {
        return Ok(None);
    };
    let device = inference::parse_device(&args.device)?;
    let kv_type = inference::parse_kv_type(args.gen_kv_cache.as_deref())?;
    let mut model = GgufGenerator::load(&path, &device)?;
    model.set_kv_type(kv_type);
    GeneratorService::start(model, args.generation_params(), args.batch_config()).map(Some)
}

/// Everything the service or a command needs; never fails.
pub fn load(args: &ModelArgs) -> LoadedModels {
    let mut pipeline = Pipeline::rules_only();
    let mut nli_note = None;
    let nli = match load_nli(args) {
        Ok(Some(nli)) => {
            pipeline.classifier = Classifier::with_model(Arc::new(nli.clone()));
            Some(nli)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "zero-shot model not loaded; the classifier uses keyword rules");
            nli_note = Some(format!(
                "classifier: model '{}' failed to load: {}; keyword rules in use",
                args.nli_model,
                first_line(&e.to_string())
            ));
            None
        }
    };
    let mut gen_note = None;
    let generator = match load_generator(args) {
        Ok(Some(g)) => {
            pipeline.troubleshooter = Troubleshooter::with_generator(Arc::new(g.clone()));
            Some(g)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "text-generation model not loaded; the troubleshooter uses playbooks");
            gen_note = Some(format!(
                "troubleshooter: model '{}' failed to load: {}; category playbooks in use",
                args.gen_model,
                first_line(&e.to_string())
            ));
            None
        }
    };
    LoadedModels {
        notes: notes(&pipeline, nli_note, gen_note),
        pipeline,
        nli,
        generator,
    }
}
